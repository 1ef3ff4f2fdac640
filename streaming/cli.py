"""The ``facecast`` command: one sub-command per job, wiring engine, backends and server together."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from facecast.engine.checkpoint import DEFAULT_MODEL_DIR
from facecast.engine.errors import FacecastError
from facecast.export.commands import add_commands as add_export_commands
from facecast.streaming.bench import add_bench_stream
from facecast.streaming.commands import add_serve
from facecast.streaming.livekit_worker_cli import add_livekit_worker

ASSETS = Path(__file__).resolve().parent.parent / "engine" / "assets"
console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _backend(name: str, model_dir: Path, device: str = "cpu"):  # noqa: ANN202 - returns a engine.backend.Backend
    from facecast.export.backends import load_backend

    return load_backend(name, Path(model_dir), device=device)


def _avatar(args: argparse.Namespace, backend):  # noqa: ANN001, ANN202 - engine.backend.Backend -> Avatar
    """--avatar as a bundle, or a portrait / idle video prepared with --face-backend (made only then)."""
    from facecast.engine import face
    from facecast.engine.avatar import load_avatar

    landmarks = None
    if Path(args.avatar).is_file():
        landmarks = face.make_backend(args.face_backend, args.face_weights, backend.cfg.face)
    return load_avatar(args.avatar, backend, landmarks)


def cmd_prepare(args: argparse.Namespace) -> None:
    backend = _backend(args.backend, args.model)
    av = _avatar(args, backend)
    av.save(args.out, backend.autoencoder_hash)
    console.print(f"avatar bundle written to {args.out} ({av.num_frames} frame(s))")


def cmd_generate(args: argparse.Namespace) -> None:
    from facecast.engine.config import InferenceConfig
    from facecast.engine.generate import generate_video
    from facecast.engine.media import load_audio
    from facecast.engine.system import check_h264, require

    require(check_h264())
    backend = _backend(args.backend, args.model, args.device)
    cfg = backend.cfg
    audio = load_audio(args.audio, cfg.audio.sample_rate)
    av = _avatar(args, backend)
    with _progress() as bar:
        task = bar.add_task("generate", total=len(audio) // cfg.audio.samples_per_frame)
        report = generate_video(
            backend,
            cfg,
            av,
            audio,
            args.out,
            InferenceConfig(steps=args.steps, seed=args.seed),
            progress=lambda done, total: bar.update(task, completed=done),
        )
    summary = {
        "out": str(args.out),
        "frames": report.frames,
        "audio_s": round(report.audio_seconds, 2),
        "wall_s": round(report.wall_seconds, 2),
        "fps": round(report.fps, 2),
        "backend": args.backend,
        "steps": args.steps,
        "stage_ms": {k: round(v, 2) for k, v in report.stage_ms.items()},
    }
    print(json.dumps(summary))


def cmd_enroll(args: argparse.Namespace) -> None:
    import dataclasses

    from facecast.engine import face
    from facecast.engine.checkpoint import load_config
    from facecast.engine.enroll import EnrollConfig, enroll

    ecfg = EnrollConfig(threads=args.threads)
    if args.minutes is not None:
        ecfg = dataclasses.replace(ecfg, minutes=args.minutes)
    landmarks = face.make_backend(args.face_backend, args.face_weights, load_config(args.model).face)
    report = enroll(
        args.video, args.out, args.model, ecfg, resume=args.resume, face_backend=landmarks, log=console.print
    )
    console.print(
        f"enrolled bundle written to {args.out}: {report['steps']} steps in {report['seconds']} s, validation loss "
        f"{report['val_loss_first']} -> {report['val_loss_last']}, adapter {report['adapter_mb']} MB, "
        f"bundle {report['bundle_mb']} MB"
    )
    print(json.dumps({k: v for k, v in report.items() if k != "config"}))


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from facecast.engine.dataset import prepare_dataset

    report = prepare_dataset(args.video_dir, args.out, max_frames=args.max_frames)
    ok = sum("skipped" not in r for r in report.values())
    console.print(f"{ok} of {len(report)} clips prepared into {args.out} (details in {args.out}/report.json)")


def cmd_pack_data(args: argparse.Namespace) -> None:
    from facecast.engine.dataset import pack_dataset
    from facecast.engine.train import DEFAULT_HOLDOUT

    written = pack_dataset(args.data, args.out, () if args.with_holdout else DEFAULT_HOLDOUT, args.max_frames)
    size_mb = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 2**20
    console.print(f"{len(written)} clips, {sum(written.values())} frames, {size_mb:.1f} MB in {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from facecast.engine.train import train

    summary = train(args.part, args.data, args.out, args.config, args.device)
    console.print(
        f"{args.part}: {summary['steps']} steps in {summary['seconds']} s, "
        f"final loss {summary['history'][-1]['loss']:.4f}"
    )


def cmd_eval(args: argparse.Namespace) -> None:
    from facecast.engine.evaluate import EvalConfig, Scorers, evaluate

    backend = _backend(args.backend, args.model, args.device)
    scorers = Scorers()
    if args.syncnet_weights:
        from facecast.engine.syncnet import SyncNetScorer

        scorers.syncnet = SyncNetScorer.from_file(args.syncnet_weights)
    if args.lpips_backbone or args.lpips_linear:
        from facecast.engine.perceptual import LPIPS

        scorers.lpips = LPIPS.from_files(args.lpips_backbone, args.lpips_linear)
    if args.fid_inception:
        from facecast.engine.perceptual import FrechetDistance

        scorers.fid = FrechetDistance.from_torchscript(args.fid_inception)
    out = Path(args.out)
    ecfg = EvalConfig(protocol=args.protocol, steps=args.steps, max_frames=args.max_frames)
    report = evaluate(
        args.clips,
        backend,
        backend.cfg,
        ecfg,
        scorers,
        out,
        out.with_suffix(".png"),
        progress=lambda name: console.print(f"eval {name}"),
        mouth_png=args.mouth_sheet,
    )
    print_eval_table(report)
    console.print(f"report: {out}, contact sheet: {report.get('contact_sheet')}")
    if "mouth_sheet" in report:
        console.print(f"mouth sheet: {report['mouth_sheet']}")


def cmd_eval_landmarks(args: argparse.Namespace) -> None:
    import numpy as np

    from facecast.engine.evaluate import evaluate_landmarks
    from facecast.engine.train import DEFAULT_HOLDOUT

    backend = _backend(args.backend, args.model)
    look = backend.cfg.a2l.lookahead_frames

    def predict(mel: np.ndarray, speaker: np.ndarray, reference: np.ndarray) -> np.ndarray:
        padded = np.concatenate([mel, np.zeros((look, mel.shape[1]), np.float32)])[None]
        state = np.zeros(backend.a2l_state_shape(), np.float32)
        disp, _ = backend.a2l(padded, speaker[None], reference[None], state)
        return disp[0, look:]

    report = evaluate_landmarks(args.data, predict, backend.cfg, args.clips or list(DEFAULT_HOLDOUT))
    table = Table(
        "clip", "mouth LMD model", "mouth LMD static", "opening corr", "motion ratio", title="A2L on held-out clips"
    )
    for name, r in {**report["clips"], "mean": report["mean"]}.items():
        table.add_row(
            name,
            f"{r['lmd_mouth_model']:.4f}",
            f"{r['lmd_mouth_static']:.4f}",
            f"{r['opening_corr']:+.3f}",
            f"{r['motion_ratio']:.2f}",
        )
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def print_eval_table(report: dict) -> None:
    mean = report["mean"]
    keys = [k for k in mean.get("model", {}) if k != "n_clips"]
    table = Table("metric", *mean.keys(), title=f"facecast eval ({report['protocol']}, {report['steps']} steps)")
    for k in keys:
        table.add_row(k, *(f"{mean[s][k]:.4f}" if k in mean[s] else "" for s in mean))
    Console().print(table)
    for name, why in report["skipped"].items():
        console.print(f"skipped {name}: {why}")


def cmd_doctor(args: argparse.Namespace) -> None:
    from facecast.engine.system import all_checks

    table = Table("piece", "status", "detail", "how to install")
    for c in all_checks():
        status = "ok" if c.ok else ("MISSING" if c.required else "missing (optional)")
        table.add_row(c.name, status, c.detail, "" if c.ok else c.fix)
    Console().print(table)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facecast", description="Real-time talking-head avatars from speech.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--model", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (default: the bundled model)"
        )
        sp.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
        sp.add_argument("--device", default="cpu", help="torch device for the torch backend (cpu, cuda)")

    def face_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--face-backend", default="dlib", choices=["dlib", "face-alignment"])
        sp.add_argument("--face-weights", type=Path, default=None, help="local weights folder for face-alignment")

    sp = sub.add_parser("generate", help="avatar + speech -> talking-face mp4")
    sp.add_argument(
        "--avatar",
        type=Path,
        default=ASSETS / "astronaut.jpg",
        help="portrait, idle video or prepared bundle",
    )
    sp.add_argument("--audio", type=Path, default=ASSETS / "speech.wav", help="speech in any common format")
    sp.add_argument("--out", type=Path, default=Path("out.mp4"))
    sp.add_argument("--steps", type=int, default=2, help="DDIM steps per frame (1-4)")
    sp.add_argument("--seed", type=int, default=0)
    model_args(sp)
    face_args(sp)
    sp.set_defaults(func=cmd_generate)

    sp = sub.add_parser("prepare", help="cache the face work for an avatar (portrait or idle video)")
    sp.add_argument("--avatar", type=Path, required=True)
    sp.add_argument("--out", type=Path, required=True)
    model_args(sp)
    face_args(sp)
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("enroll", help="fit the model to one person from 1-2 minutes of their video -> bundle")
    sp.add_argument("--video", type=Path, required=True, help="the person alone, talking, 1-2 minutes")
    sp.add_argument("--out", type=Path, required=True, help="the bundle folder (use it as --avatar)")
    sp.add_argument("--minutes", type=float, default=None, help="time budget for the whole run (default 14)")
    sp.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --out")
    sp.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    sp.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (default: the bundled model)")
    face_args(sp)
    sp.set_defaults(func=cmd_enroll)

    sp = sub.add_parser("prepare-data", help="talking-face videos -> training dataset")
    sp.add_argument("video_dir", type=Path)
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--max-frames", type=int, default=None, help="per clip, for quick runs")
    sp.set_defaults(func=cmd_prepare_data)

    sp = sub.add_parser("pack-data", help="a compact copy of a prepared dataset, to train on another machine")
    sp.add_argument("data", type=Path, help="a dataset made by prepare-data")
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--max-frames", type=int, default=None, help="per clip")
    sp.add_argument("--with-holdout", action="store_true", help="also pack the held-out clips (left out by default)")
    sp.set_defaults(func=cmd_pack_data)

    sp = sub.add_parser("train", help="train one part of a model")
    sp.add_argument("part", choices=["autoencoder", "a2l", "l2v"])
    sp.add_argument("--data", type=Path, required=True)
    sp.add_argument("--out", type=Path, required=True, help="model folder to train into")
    sp.add_argument("--config", type=Path, default=None, help="JSON run config (see configs/default.json)")
    sp.add_argument("--device", default=None, help="cpu or cuda (default: the run config's, cpu)")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", help="quality on held-out clips, with static and topline baselines")
    sp.add_argument("--clips", type=Path, required=True, help="a folder of talking-face videos (or one video)")
    sp.add_argument("--protocol", default="reconstruct", choices=["reconstruct", "one-shot", "personal"])
    sp.add_argument("--steps", type=int, default=2)
    sp.add_argument("--max-frames", type=int, default=250, help="per clip")
    sp.add_argument("--out", type=Path, default=Path("eval/report.json"), help="JSON report; the PNG goes beside it")
    sp.add_argument("--syncnet-weights", type=Path, default=None, help="syncnet_v2.model, for LSE-C/LSE-D")
    sp.add_argument("--lpips-backbone", type=Path, default=None, help="alexnet-owt-7be5be79.pth, for LPIPS/tLP")
    sp.add_argument("--lpips-linear", type=Path, default=None, help="the lpips package's alex.pth")
    sp.add_argument("--fid-inception", type=Path, default=None, help="TorchScript inception-2015-12-05.pt, for FID")
    sp.add_argument(
        "--mouth-sheet", type=Path, default=None, help="also write a PNG of real vs generated mouths, 3x enlarged"
    )
    model_args(sp)
    sp.set_defaults(func=cmd_eval)

    bench = add_export_commands(sub)  # export, bench models
    add_bench_stream(bench)
    add_serve(sub)
    add_livekit_worker(sub)

    sp = sub.add_parser("eval-landmarks", help="A2L alone on held-out clips of a prepared dataset")
    sp.add_argument("--data", type=Path, required=True, help="a dataset made by prepare-data")
    sp.add_argument("--clips", nargs="*", default=None, help="clip names (default: the training hold-out)")
    sp.add_argument("--json", type=Path, default=None)
    model_args(sp)
    sp.set_defaults(func=cmd_eval_landmarks)

    sp = sub.add_parser("doctor", help="check the system pieces facecast needs")
    sp.set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    start = time.time()
    try:
        args.func(args)
    except FacecastError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        return e.exit_code
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    logging.getLogger("facecast").info("done in %.1f s", time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
