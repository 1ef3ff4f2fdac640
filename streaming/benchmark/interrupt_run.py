"""Barge-in, measured: how many output frames of cut-off speech still go out after ``LiveEngine.interrupt()``.

A talker's whole utterance is queued at once (as a TTS pushes it, ahead of real time); once the avatar's speech
is going out, the engine is interrupted, and the frames that follow are watched until the first idle one (the avatar's
own frame, no talker audio). Repeated a few times; the worst trial is the number. Target: at most 2 frames (80 ms);
LiveTalking and MuseTalk users report 3 s and more, because their queued frames keep playing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from facecast.engine.avatar.prepare import Avatar
from facecast.engine.backend import Backend

from ..config import LiveConfig
from ..live.clock import Clock
from ..live.engine import LiveEngine, OutputFrame
from .measured_run import Driver, Run


@dataclass(frozen=True)
class InterruptBenchOptions:
    trials: int = 5
    speech_s: float = 3.0  # queued per trial: far more than plays before the interrupt
    speaking_frames: int = 10  # frames of speech sound out before the interrupt comes
    max_wait_s: float = 10.0  # a trial that never shows speech (or never idles) ends after this
    target_frames: int = 2


def _idle(out: OutputFrame) -> bool:
    return out.generated is None and not out.audible


async def _trial(engine: LiveEngine, driver: Driver, audio_16k: np.ndarray, options: InterruptBenchOptions) -> dict:
    queue = engine.subscribe()
    seen: list[tuple[float, OutputFrame]] = []

    async def watch() -> None:
        while (out := await queue.get()) is not None:
            seen.append((engine.clock.now(), out))

    watcher = asyncio.create_task(watch())
    buf = engine.open_source("bench tts", live=False)
    try:
        buf.write(audio_16k[: int(options.speech_s * engine.cfg.audio.sample_rate)])
        buf.mark_end("utterance")
        run = Run([engine], [])  # type: ignore[list-item]  # the driver only moves the engines' time

        def speaking() -> bool:
            # by sound, not by generated pictures: a busy CPU skips pictures, the speech goes out regardless
            return sum(o.audible for _, o in seen) >= options.speaking_frames

        await driver.run(run, options.max_wait_s, speaking)
        if not speaking():
            return {"spoke": False, "frames": None, "ms": None}
        t_interrupt, at = engine.clock.now(), len(seen)
        engine.interrupt()
        await driver.run(run, options.max_wait_s, lambda: any(_idle(o) for _, o in seen[at:]))
        after = seen[at:]
        first_idle = next((i for i, (_, o) in enumerate(after) if _idle(o)), None)
        if first_idle is None:
            return {"spoke": True, "frames": None, "ms": None}
        t_idle = after[first_idle][0]
        # frames: speech frames still sent after the interrupt, +1 for the idle one itself (the next tick = 1)
        return {"spoke": True, "frames": first_idle + 1, "ms": round(1000 * (t_idle - t_interrupt), 1)}
    finally:
        engine.close_source(buf)
        engine.unsubscribe(queue)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def measure_interrupt(
    backend: Backend,
    avatar: Avatar,
    audio_16k: np.ndarray,
    live: LiveConfig,
    clock: Clock,
    driver: Driver,
    timed: bool,
    options: InterruptBenchOptions | None = None,
) -> dict[str, Any]:
    """Interrupt -> idle mouth over ``options.trials`` utterances on one warmed-up engine."""
    options = options or InterruptBenchOptions()
    live = dataclasses.replace(live, speaker_seconds=0)  # the voice embedding plays no part in a barge-in
    engine = LiveEngine(backend, avatar, live, clock)
    await engine.warm_up()
    await engine.start()
    try:
        trials = [await _trial(engine, driver, audio_16k, options) for _ in range(options.trials)]
    finally:
        driver.release()
        await engine.stop()
    frames = [t["frames"] for t in trials if t.get("frames") is not None]
    ms = [t["ms"] for t in trials if t.get("ms") is not None]
    worst = max(frames) if len(frames) == len(trials) else None
    return {
        "trials": len(trials),
        "interrupt_to_idle_frames": worst,  # 1: the very next frame is idle
        "interrupt_to_idle_ms": max(ms) if timed and ms else None,
        "target_frames": options.target_frames,
        "ok": worst is not None and worst <= options.target_frames,
        "per_trial": trials,
    }
