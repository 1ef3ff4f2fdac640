"""Memory of this process for the benchmarks: resident memory now and at its peak, and a watch over a run.

psutil reads the current RSS on every platform. The peak comes from ``getrusage``, whose unit is the platform's:
KiB on Linux, bytes on macOS.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from typing import Any

import psutil


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _cuda() -> Any:
    """torch when it is loaded and has a GPU, else None (an onnxruntime-only run does not import it for this)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


class MemoryWatch:
    """RSS sampled every ``every_s`` of wall time while a run goes on, and CUDA's peak allocation over it."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s = every_s
        self.before_mb = self.peak_mb = self.after_mb = 0.0
        self.cuda_peak_mb: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, rss_mb())
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        self.before_mb = self.peak_mb = rss_mb()
        torch = _cuda()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        self._task = asyncio.create_task(self._sample(), name="bench-memory")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.after_mb = rss_mb()
        self.peak_mb = max(self.peak_mb, self.after_mb)
        torch = _cuda()
        if torch is not None:
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    def report(self, sessions: int) -> dict[str, float | None]:
        return {
            "rss_before_mb": round(self.before_mb, 1),
            "rss_peak_mb": round(self.peak_mb, 1),
            "rss_per_session_mb": round((self.peak_mb - self.before_mb) / max(1, sessions), 1),
            "cuda_max_allocated_mb": None if self.cuda_peak_mb is None else round(self.cuda_peak_mb, 1),
        }
