"""What Whisper tiny.en's encoder under A2L (issue 19) costs per live call, as the runtime runs it: Whisper log-mel
of one live window (``SpeechEncoderConfig.window_frames`` + ``pad_frames``), then the exported
``speech_encoder.onnx`` in onnxruntime with the runtime's session options, float32 and int8 (the export's default),
on 1 and 2 threads, for 1 window and for 2 (two sessions batched by the shared model worker). Median ms per call,
and a session's share of one core (one call every ``every_frames`` frames of 40 ms). The encoder is converted with
``facecast convert-whisper`` and checked with ``python -m facecast.engine.evaluation.studies.whisper_encoder``.

    python -m facecast.streaming.benchmark.whisper_encoder_cost [--model DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

from facecast.engine import whisper
from facecast.engine.bundled import DEFAULT_SPEECH
from facecast.engine.checkpoint import DEFAULT_MODEL_DIR, load_config
from facecast.engine.config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from facecast.engine.media import load_audio
from facecast.engine.system import cpu_name
from facecast.export.backends.ort_session import import_onnxruntime, session_options
from facecast.export.onnx.export import ExportOptions, export_speech
from facecast.streaming.benchmark.bench_models import print_report, time_calls

WARMUP_CALLS = 3  # first calls allocate


def _median_ms(fn, repeats: int) -> float:
    return round(time_calls(fn, repeats, WARMUP_CALLS)[0], 2)


def bench(model_dir: Path, repeats: int) -> dict:
    cfg = load_config(model_dir)
    speech = cfg.speech
    window = speech.window_samples
    audio = load_audio(DEFAULT_SPEECH, SAMPLE_RATE)[: 2 * window]
    windows = np.stack([audio[:window], audio[window : 2 * window]])
    padded = np.pad(windows, ((0, 0), (0, speech.pad_frames * SAMPLES_PER_FRAME)))
    mel = whisper.whisper_log_mel(padded, speech)
    report: dict = {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "window_ms": speech.window_frames * 1000 // FPS,
        "pad_ms": speech.pad_frames * 1000 // FPS,
        "blocks": speech.blocks,
        "every_frames": speech.every_frames,
        "log_mel_ms": _median_ms(lambda: whisper.whisper_log_mel(padded[:1], speech), repeats),
        "encoder_ms": {},
    }
    ort = import_onnxruntime()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, int8 in (("float32", False), ("int8", True)):
            out = Path(tmp) / kind
            out.mkdir()
            spec = export_speech(model_dir, cfg, out, ExportOptions(speech_int8=int8, threads=1))
            for threads in (1, 2):
                session = ort.InferenceSession(
                    str(out / spec.file), session_options(threads), providers=["CPUExecutionProvider"]
                )
                for batch in (1, 2):
                    ms = _median_ms(lambda s=session, b=batch: s.run(None, {"mel": mel[:b]}), repeats)
                    report["encoder_ms"][f"{kind} threads={threads} windows={batch}"] = ms
    call_ms = report["log_mel_ms"] + report["encoder_ms"]["int8 threads=1 windows=1"]
    report["core_share_per_session"] = round(call_ms / (speech.every_frames * 1000 / FPS), 3)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="a model folder whose A2L hears Whisper")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    print_report(bench(a.model, a.repeats), a.json)


if __name__ == "__main__":
    main()
