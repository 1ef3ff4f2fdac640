"""Do phone labels from pocketsphinx's bundled English model predict the mouth opening better than the mel?

Issue 9 / docs/quality.md: A2L's held-out inner-lip opening correlation is 0.37, and mouth LMD <= 0.8x static
needs about 0.61-0.68. A2L (a few tiny GRUs on log-mel) is trained on 9 minutes from ~70 speakers and overfits
them; an acoustic model trained on hundreds of hours labels phones alike for any speaker. This script measures,
quickly and without training A2L, how much each audio feature tells about the opening on the held-out speakers:

  per clip, the features of frames n-6 .. n+2 (A2L's 2-frame lookahead; ``--lookahead``) -> ridge regression
  -> the inner-lip opening of frame n (pose-free landmarks, z-scored per clip); fit on the training clips,
  Pearson r per held-out clip (the same split as ``facecast train a2l``), averaged.

Features (one row per 40 ms video frame):
  mel             the normalised log-mel A2L hears, 80 bands averaged over the frame's 4 mel frames
  offline         phone coverage (fraction of the frame's four 10 ms recogniser frames given to each of 42 phones)
                  from a phone-loop decode of the whole clip (pocketsphinx allphone search, en-us-phone.lm.bin)
  causal:D        the same, live: the clip fed 40 ms at a time, the row emitted when frame k completes is frame
                  k - D on the decoder's best *partial* path then (never revised). With A2L's lookahead of 2,
                  D <= 2 is usable in the live path; rows are used as they would be live (no realignment).
  ...;lw=X        decoder language weight X (default 2); ...;cmninit=c0,..,c12 initial cepstral mean (live CMN
                  starts from the model's 40,3,-1 otherwise); ``--cmninit-from-train`` measures it on the
                  training clips and adds it to every causal variant.

It also times the live decoder per 40 ms frame on one thread (``--time-clip``).

Needs ``pip install pocketsphinx`` (BSD; 5.1.1 bundles the en-us model and phone LM); not a facecast dependency.

    OMP_NUM_THREADS=1 python -m facecast.engine.evaluation.studies.a2l_phone_features --data runs/data \
        --cache runs/phone_cache --variants mel offline "offline;lw=1" causal:1 causal:2 --cmninit-from-train \
        --json runs/phones.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from facecast.engine.audio import mel_per_video_frame, normalised_log_mel
from facecast.engine.config import AudioConfig
from facecast.engine.errors import FacecastError
from facecast.engine.evaluation import metrics
from facecast.engine.landmarks import register_to
from facecast.engine.training.train import DEFAULT_HOLDOUT

AUDIO = AudioConfig()
# pocketsphinx en-us's context-independent phones (its mdef): silence, two noise fillers, the 39 ARPAbet phones.
PHONES = (
    "SIL", "+NSN+", "+SPN+",
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY", "JH",
    "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}
RECOGNISER_FRAMES = AUDIO.samples_per_frame // 160  # pocketsphinx runs at 100 frames/s: 4 per video frame
PAST_FRAMES, LOOKAHEAD_FRAMES = 6, 2  # the regression's window around frame n
EXCLUDED = ("kannadasub_input_video",)  # captions under the mouth: left out of A2L's data too


def phone_decoder(options: dict[str, str]):  # -> pocketsphinx.Decoder
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError as e:
        raise FacecastError("this benchmark needs pocketsphinx: pip install pocketsphinx") from e
    kw: dict = {"lw": 2.0, "beam": 1e-20, "pbeam": 1e-20}
    kw.update({k: v if k == "cmninit" else float(v) for k, v in options.items()})
    return Decoder(
        hmm=get_model_path("en-us/en-us"),
        allphone=get_model_path("en-us/en-us-phone.lm.bin"),
        dict=None,
        loglevel="ERROR",
        **kw,
    )


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def coverage(segments: list[tuple[str, int, int]], frame: int) -> np.ndarray:
    """(N_PHONES,) share of video frame ``frame``'s recogniser frames per phone; segments' ends are inclusive."""
    lo, hi = frame * RECOGNISER_FRAMES, (frame + 1) * RECOGNISER_FRAMES
    row = np.zeros(len(PHONES), np.float32)
    for phone, first, last in segments:
        overlap = min(last + 1, hi) - max(first, lo)
        if overlap > 0:
            row[PHONE_INDEX.get(phone, PHONE_INDEX["+NSN+"])] += overlap / RECOGNISER_FRAMES
    return row


def segments_of(decoder) -> list[tuple[str, int, int]]:
    return [(s.word, s.start_frame, s.end_frame) for s in decoder.seg() or []]


def offline_phones(audio: np.ndarray, options: dict[str, str]) -> np.ndarray:
    decoder = phone_decoder(options)
    decoder.start_utt()
    decoder.process_raw(pcm16(audio), full_utt=True)
    decoder.end_utt()
    segments = segments_of(decoder)
    return np.stack([coverage(segments, n) for n in range(len(audio) // AUDIO.samples_per_frame)])


def causal_phones(audio: np.ndarray, delay: int, options: dict[str, str]) -> tuple[np.ndarray, float]:
    """Live decode, 40 ms at a time: (frames, N_PHONES) and the mean seconds per frame."""
    decoder = phone_decoder(options)
    decoder.start_utt()
    spf = AUDIO.samples_per_frame
    rows = np.zeros((len(audio) // spf, len(PHONES)), np.float32)
    start = time.perf_counter()
    for k in range(len(rows)):
        decoder.process_raw(pcm16(audio[k * spf : (k + 1) * spf]), full_utt=False)
        if k >= delay:
            rows[k] = coverage(segments_of(decoder), k - delay)
    seconds = (time.perf_counter() - start) / max(1, len(rows))
    decoder.end_utt()
    return rows, seconds


def parse_variant(spec: str) -> tuple[str, int, dict[str, str]]:
    head, *opts = spec.split(";")
    kind, _, arg = head.partition(":")
    return kind, int(arg or 0), dict(o.split("=", 1) for o in opts)


def features(spec: str, clip: Path, cache: Path | None) -> np.ndarray:
    path = cache / spec.replace("/", "_") / f"{clip.name}.npy" if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    audio = np.load(clip / "audio.npy").astype(np.float32)
    kind, delay, options = parse_variant(spec)
    if kind == "mel":
        mel = mel_per_video_frame(normalised_log_mel(audio, AUDIO), AUDIO)
        x = mel.reshape(len(mel), AUDIO.mels_per_frame, AUDIO.n_mels).mean(1)
    elif kind == "offline":
        x = offline_phones(audio, options)
    elif kind == "causal":
        x = causal_phones(audio, delay, options)[0]
    else:
        raise FacecastError(f"unknown feature {kind!r}: mel, offline, causal:D")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, x.astype(np.float32))
    return x


def opening(clip: Path) -> np.ndarray:
    landmarks = np.load(clip / "landmarks.npy")
    return metrics.mouth_opening(register_to(landmarks, landmarks[0]))


def windows(x: np.ndarray, lookahead: int) -> np.ndarray:
    """(T, D) -> (T, (PAST + 1 + lookahead) * D): each frame with its neighbours, edges repeated."""
    idx = np.arange(len(x))[:, None] + np.arange(-PAST_FRAMES, lookahead + 1)[None]
    return x[np.clip(idx, 0, len(x) - 1)].reshape(len(x), -1)


def ridge_proxy(spec: str, clips: list[Path], cache: Path | None, ridge: float, lookahead: int) -> dict:
    train_x, train_y, held = [], [], {}
    for clip in clips:
        x, y = features(spec, clip, cache), opening(clip)
        n = min(len(x), len(y))
        y = (y[:n] - y[:n].mean()) / (y[:n].std() + 1e-9)
        if clip.name in DEFAULT_HOLDOUT:
            held[clip.name] = (windows(x[:n], lookahead), y)
        else:
            train_x.append(windows(x[:n], lookahead))
            train_y.append(y)
    x, y = np.concatenate(train_x), np.concatenate(train_y)
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = np.linalg.solve(z.T @ z + ridge * len(z) / 1000 * np.eye(z.shape[1]), z.T @ y)
    per_clip = {name: metrics.pearson((hx - mean) / std @ w, hy) for name, (hx, hy) in held.items()}
    return {
        "train_corr": metrics.pearson(z @ w, y),
        "heldout_corr": float(np.mean(list(per_clip.values()))),
        "clips": per_clip,
    }


def training_cmn(clips: list[Path]) -> str:
    """Mean of pocketsphinx's whole-utterance cepstral mean over the training clips, as a cmninit string."""
    means = []
    for clip in clips:
        if clip.name in DEFAULT_HOLDOUT:
            continue
        decoder = phone_decoder({})
        decoder.start_utt()
        decoder.process_raw(pcm16(np.load(clip / "audio.npy")), no_search=True, full_utt=True)
        decoder.end_utt()
        means.append([float(v) for v in decoder.get_cmn(False).split(",")])
    return ",".join(f"{v:.2f}" for v in np.mean(means, axis=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a dataset made by facecast prepare-data")
    p.add_argument("--cache", type=Path, default=None, help="folder for the features (reused across runs)")
    p.add_argument("--variants", nargs="+", default=["mel", "offline", "causal:1", "causal:2"])
    p.add_argument("--cmninit-from-train", action="store_true", help="start live CMN at the training clips' mean")
    p.add_argument("--ridge", type=float, default=10.0)
    p.add_argument("--lookahead", type=int, default=LOOKAHEAD_FRAMES, help="frames after n the regression sees")
    p.add_argument("--time-clip", default="edtalk_lieu_60s", help="clip to time the live decoder on")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    clips = sorted(d for d in args.data.iterdir() if (d / "meta.json").is_file() and d.name not in EXCLUDED)
    variants = list(args.variants)
    report: dict = {"window_frames": [-PAST_FRAMES, args.lookahead], "variants": {}}
    if args.cmninit_from_train:
        report["cmninit"] = cmn = training_cmn(clips)
        variants += [f"{v};cmninit={cmn}" for v in args.variants if v.startswith("causal")]
    for spec in variants:
        report["variants"][spec] = r = ridge_proxy(spec, clips, args.cache, args.ridge, args.lookahead)
        print(f"{spec[:60]:60s} train r {r['train_corr']:.3f}  held-out r {r['heldout_corr']:.3f}", flush=True)
    timed = args.data / args.time_clip
    if timed.is_dir():
        audio = np.load(timed / "audio.npy").astype(np.float32)
        for seconds in (10, 60):
            cost = causal_phones(audio[: seconds * AUDIO.sample_rate], 2, {})[1]
            report[f"live_ms_per_frame_{seconds}s_utterance"] = cost * 1e3
            print(f"live decoder, {seconds} s utterance: {cost * 1e3:.2f} ms per 40 ms frame (one thread)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
