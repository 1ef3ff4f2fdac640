"""Checks for the system pieces facecast needs, each with the command that installs it."""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import DependencyError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str
    required: bool = True


def check_h264() -> Check:
    import av

    ok = "libx264" in av.codecs_available
    return Check("H.264 encoder (PyAV's FFmpeg)", ok, f"PyAV {av.__version__}", "pip install --force-reinstall av")


def check_command(command: str, label: str, fix: str) -> Check:
    """An optional command-line tool on PATH."""
    path = shutil.which(command)
    return Check(label, path is not None, path or "not found", fix, required=False)


def check_ffmpeg_cli() -> Check:
    return check_command("ffmpeg", "ffmpeg command", "apt-get install ffmpeg  (or brew install ffmpeg)")


def check_portaudio() -> Check:
    try:
        import sounddevice  # noqa: F401 - importing loads PortAudio

        return Check("PortAudio (microphone input)", True, "sounddevice loads", "", required=False)
    except (ImportError, OSError) as e:
        return Check(
            "PortAudio (microphone input)",
            False,
            str(e),
            "apt-get install libportaudio2  (or brew install portaudio)",
            required=False,
        )


def check_espeak() -> Check:
    return check_command("espeak-ng", "espeak-ng (remaking the bundled speech clip)", "apt-get install espeak-ng")


def all_checks() -> list[Check]:
    return [check_h264(), check_ffmpeg_cli(), check_portaudio(), check_espeak()]


def require(check: Check) -> None:
    if not check.ok:
        raise DependencyError(f"{check.name} is missing ({check.detail}). Install it: {check.fix}")


def require_portaudio() -> None:
    require(check_portaudio())


def cpu_name() -> str:
    """The CPU model (/proc/cpuinfo's model name; elsewhere what ``platform`` says), named beside every figure:
    two 2-core machines of the same kind differ 2x."""
    try:
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical cores: hyper-threads share one core's FPUs, so more threads than cores only adds contention."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def limit_blas_threads(threads: int) -> None:
    """numpy's BLAS (OpenBLAS, MKL) on at most ``threads`` threads from now on, in the whole process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
