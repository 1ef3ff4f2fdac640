"""Augmented audio copies for the Whisper A2L (``TrainConfig.a2l_aug_*``, ``engine/training/augment.py``)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import moving_face_video, speech_like, tiny_config, write_model
from safetensors.torch import load_file
from test_whisper import TINY, tiny_ct2

from facecast.engine import whisper
from facecast.engine.config import ModelConfig
from facecast.engine.training import augment
from facecast.engine.training.augment import AudioAugment, augment_audio
from facecast.engine.training.dataset import load_clips, prepare_dataset
from facecast.engine.training.train import (
    TrainConfig,
    a2l_augment_key,
    a2l_batch,
    a2l_clip,
    a2l_features_key,
    augment_recipe,
    train,
)

ALL = AudioAugment(pitch=0.25, formant=0.15, reverb=1.0, noise=1.0)


def bursts(seconds: float = 3.0) -> tuple[np.ndarray, list[int]]:
    """Voiced bursts (150 Hz and harmonics) starting at known video frames, silence between."""
    rate, n = 16_000, int(seconds * 16_000)
    t = np.arange(n) / rate
    voiced = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    gate = np.zeros(n)
    starts = [5, 20, 31, 50, 62]
    for s in starts:
        gate[s * 640 : (s + 6) * 640] = 1.0
    return (0.2 * voiced * gate + 1e-4 * np.random.default_rng(0).standard_normal(n)).astype(np.float32), starts


def frame_db(audio: np.ndarray) -> np.ndarray:
    frames = audio[: len(audio) // 640 * 640].reshape(-1, 640)
    return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)


@pytest.mark.parametrize(
    "recipe",
    [AudioAugment(pitch=0.25), AudioAugment(formant=0.15), AudioAugment(reverb=1.0), AudioAugment(noise=1.0), ALL],
)
def test_augmented_audio_keeps_the_length_and_the_time_axis(recipe):
    audio, starts = bursts()
    for copy in range(3):
        out = augment_audio(audio, recipe, recipe.rng(copy, "clip"))
        assert out.shape == audio.shape and out.dtype == np.float32
        assert not np.array_equal(out, audio)
        before, after = frame_db(audio), frame_db(out)
        # the loudness envelope lines up best at lag 0; each burst's energy keeps its centre in time (the pitch
        # shift's phase vocoder smears an onset by ~16 ms each way, symmetrically) and stays in its frames
        lags = range(-3, 4)
        corr = [np.corrcoef(np.roll(after, lag)[5:-5], before[5:-5])[0, 1] for lag in lags]
        assert int(np.argmax(corr)) == 3
        power = 10 ** (after / 10)
        for s in starts:
            frames = np.arange(s - 3, s + 10)
            centre = (frames * power[frames]).sum() / power[frames].sum()
            assert centre == pytest.approx(s + 2.5, abs=0.25)
            assert power[s - 1 : s + 7].sum() > 0.9 * power[frames].sum()


def test_the_same_copy_is_the_same_audio_and_copies_differ():
    audio = speech_like(1.0)
    a = augment_audio(audio, ALL, ALL.rng(0, "clip"))
    np.testing.assert_array_equal(a, augment_audio(audio, ALL, ALL.rng(0, "clip")))
    assert not np.array_equal(a, augment_audio(audio, ALL, ALL.rng(1, "clip")))
    assert not np.array_equal(a, augment_audio(audio, ALL, ALL.rng(0, "other clip")))


def test_pitch_and_formant_move_the_spectrum():
    audio, _ = bursts()
    rate = 16_000

    def peak_hz(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x[20 * 640 : 26 * 640]))
        return float(np.fft.rfftfreq(6 * 640, 1 / rate)[np.argmax(spec)])

    def centroid(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x[20 * 640 : 26 * 640])) ** 2
        return float((np.fft.rfftfreq(6 * 640, 1 / rate) * spec).sum() / spec.sum())

    assert peak_hz(audio) == pytest.approx(150, abs=5)
    assert peak_hz(augment.shift_pitch(audio, 1.2)) == pytest.approx(180, abs=8)
    warped = augment.warp_envelope(audio, 1.2)
    assert peak_hz(warped) == pytest.approx(150, abs=5)  # the harmonics stay, their weights move up
    assert centroid(warped) > 1.1 * centroid(audio)
    assert centroid(augment.warp_envelope(audio, 1 / 1.2)) < 0.9 * centroid(audio)


def test_cache_keys_differ_per_augmentation_and_copy():
    base = "a2db29475b7d"
    keys = {
        a2l_augment_key(base, ALL, 0),
        a2l_augment_key(base, ALL, 1),
        a2l_augment_key(base, dataclasses.replace(ALL, pitch=0.2), 0),
        a2l_augment_key(base, dataclasses.replace(ALL, seed=1), 0),
        a2l_augment_key("another", ALL, 0),
    }
    assert len(keys) == 5 and all(k.split("-aug-")[0] in (base, "another") for k in keys)
    assert a2l_augment_key(base, ALL, 0) == a2l_augment_key(base, AudioAugment(**dataclasses.asdict(ALL)), 0)


def test_off_by_default():
    tcfg = TrainConfig()
    assert tcfg.a2l_aug_copies == 0 and not augment_recipe(tcfg).active


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for i in range(2):
        moving_face_video(root / f"speaker{i}.mp4", frames=30)
    out = tmp_path_factory.mktemp("dataset")
    prepare_dataset(root, out, tiny_config())
    return out


def whisper_folder(folder):
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, a2l=dataclasses.replace(cfg.a2l, audio_features="whisper"), speech=TINY)
    folder.mkdir(parents=True)
    write_model(folder, cfg)
    model_bin = folder.parent / f"{folder.name}.bin"
    whisper.write_ctranslate2(model_bin, tiny_ct2())
    whisper.convert_ctranslate2(model_bin, folder, cfg.speech)
    return folder


def run_config(tmp_path, name, **a2l):
    path = tmp_path / f"{name}.json"
    train_ = {"steps": 2, "batch": 2, "warmup_steps": 1, "log_every": 1, "save_every": 1, "holdout": ["speaker1"]}
    path.write_text(json.dumps({"train": train_, "a2l": {"sequence_frames": 10, **a2l}}))
    return path


def test_training_caches_one_folder_per_copy_for_training_clips_only(dataset, tmp_path):
    model = whisper_folder(tmp_path / "model")
    recipe = {"a2l_aug_pitch": 0.25, "a2l_aug_noise": 1.0}
    train("a2l", dataset, model, run_config(tmp_path, "aug", a2l_aug_copies=2, **recipe))
    cfg = ModelConfig.load(model / "config.json")
    base = a2l_features_key(cfg, model)
    root = model / "runs" / "a2l_features"
    r = AudioAugment(pitch=0.25, noise=1.0)
    copies = [root / a2l_augment_key(base, r, i) for i in range(2)]
    assert sorted(p.name for p in root.iterdir()) == sorted([base, *(c.name for c in copies)])
    clean = np.load(root / base / "speaker0.npy")
    assert (root / base / "speaker1.npy").is_file()  # the held-out clip: clean only
    for c in copies:
        assert sorted(p.name for p in c.glob("*.npy")) == ["speaker0.npy"]
        aug = np.load(c / "speaker0.npy")
        assert aug.shape == clean.shape and not np.allclose(aug, clean)
        assert json.loads((c / "key.json").read_text())["recipe"]["pitch"] == 0.25
    assert not np.allclose(np.load(copies[0] / "speaker0.npy"), np.load(copies[1] / "speaker0.npy"))
    # exactly the features a live stream computes for that copy's audio
    (clip,) = load_clips(dataset, ["speaker0"])
    audio = augment_audio(clip.audio, r, r.rng(1, "speaker0"))
    encode = whisper.model_encode(model, cfg)
    np.testing.assert_allclose(np.load(copies[1] / "speaker0.npy"), whisper.a2l_features(audio, cfg, encode), atol=1e-5)


def test_batches_draw_the_copies_only_when_augmenting(dataset, tmp_path):
    cfg = tiny_config()
    (clip,) = load_clips(dataset, ["speaker0"])
    cache: dict = {}
    mel = a2l_clip(clip, cfg, cache)[0]
    tcfg = TrainConfig(batch=8, sequence_frames=10, mel_warp_aug=0.0, mel_gain_aug=0.0, mel_noise_aug=0.0)
    copies = {clip.name: [mel + 100.0]}
    drawn = a2l_batch([clip], cfg, tcfg, np.random.default_rng(0), cache, copies=copies)["mel"].numpy()
    shifted = drawn.max(axis=(1, 2)) > 50
    assert shifted.any() and not shifted.all()  # clean and augmented windows in one batch
    plain = a2l_batch([clip], cfg, tcfg, np.random.default_rng(0), cache, augment=False, copies=copies)
    assert plain["mel"].numpy().max() < 50
    # no copies: the same draws as before there were copies
    a = a2l_batch([clip], cfg, tcfg, np.random.default_rng(3), cache, augment=False)
    b = a2l_batch([clip], cfg, tcfg, np.random.default_rng(3), cache, augment=False, copies=copies)
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_off_leaves_training_unchanged(dataset, tmp_path):
    """No copies (the default): no augmented features, and the same weights whatever the recipe says."""
    plain, unset = whisper_folder(tmp_path / "plain"), whisper_folder(tmp_path / "unset")
    train("a2l", dataset, plain, run_config(tmp_path, "plain"))
    train("a2l", dataset, unset, run_config(tmp_path, "unset", a2l_aug_pitch=0.25, a2l_aug_copies=0))
    assert [p.name for p in (plain / "runs" / "a2l_features").iterdir()] == [
        a2l_features_key(ModelConfig.load(plain / "config.json"), plain)
    ]
    wa, wb = load_file(str(plain / "a2l.safetensors")), load_file(str(unset / "a2l.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
