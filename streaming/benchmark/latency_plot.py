"""The bench report as a picture, one colour per variant: end-to-end latency of every frame over the run and its
histogram (top), and the same for the picture actually shown (bottom), which is where skipped frames show.

In ``--fast`` mode nothing is timed on the (virtual) clock, so the model time of each rendered frame is drawn
instead. Uses matplotlib's Agg canvas directly, so it needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np


def _points(xs: list[float | None], ys: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    keep = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    if not keep:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*keep, strict=True)
    return np.asarray(x, float), np.asarray(y, float)


def _panel_pair(over_time: Any, hist: Any, report: dict[str, Any], key: str, dots: bool) -> None:  # matplotlib Axes
    """One series key of every variant's sessions: over time on the left, pooled histogram on the right."""
    for colour, v in zip(_colours(len(report["variants"])), report["variants"], strict=True):
        pooled = []
        for i, session in enumerate(v["per_session"]):
            series = session["series"]
            if key == "frame_ms":
                y = np.asarray(series["frame_ms"], float)
                x = np.arange(len(y), dtype=float)
            else:
                x, y = _points(series["t_s"], series[key])
            pooled.append(y)
            label = v["name"] if i == 0 else None
            if dots:  # gaps between shown pictures are real: no line across them
                over_time.plot(x, y, ".", ms=2, color=colour, label=label)
            else:
                over_time.plot(x, y, lw=0.8, color=colour, label=label)
        values = np.concatenate(pooled) if pooled else np.zeros(0)
        if values.size:
            hist.hist(values, bins=40, alpha=0.5, color=colour)


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    return [colormaps["tab10"](i % 10) for i in range(n)]


def write_plot(report: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    timed = report["mode"] == "realtime"
    webrtc = report["options"]["webrtc"]
    title = f"facecast bench stream ({report['mode']}, {report['options']['seconds']:g} s per variant)"
    summary = textwrap.fill(f"{report['verdict']['variant']}: {report['verdict']['summary']}", 150)
    if not timed:
        fig = Figure(figsize=(12, 4.8), layout="constrained")
        FigureCanvasAgg(fig)
        over_time, hist = fig.subplots(1, 2, width_ratios=[2, 1])
        _panel_pair(over_time, hist, report, "frame_ms", dots=False)
        over_time.set(xlabel="rendered frame", ylabel="model time per frame (ms)", title="--fast: model time")
        hist.set(xlabel="model time per frame (ms)", ylabel="frames", title="distribution")
        over_time.legend(fontsize=7, loc="upper right")
    else:
        fig = Figure(figsize=(12, 8), layout="constrained")
        FigureCanvasAgg(fig)
        (e2e_t, e2e_h), (pic_t, pic_h) = fig.subplots(2, 2, width_ratios=[2, 1])
        key = "client_e2e_ms" if webrtc else "e2e_ms"
        _panel_pair(e2e_t, e2e_h, report, key, dots=False)
        _panel_pair(pic_t, pic_h, report, "picture_e2e_ms", dots=True)
        target = report["targets"]["e2e_p95_ms"]
        for ax in (e2e_t, pic_t):
            ax.axhline(target, color="red", ls="--", lw=1, label="target p95")
        for ax in (e2e_h, pic_h):
            ax.axvline(target, color="red", ls="--", lw=1)
        end = "decoded at the loopback WebRTC client" if webrtc else "frame out of the engine"
        e2e_t.set(ylabel="end-to-end latency (ms)", title=f"audio arrival -> {end}")
        pic_t.set(
            xlabel="time since start (s)",
            ylabel="latency of the shown picture (ms)",
            title="audio of the mouth actually shown -> frame out (repeats when frames are skipped)",
        )
        e2e_h.set(ylabel="frames", title="distribution")
        pic_h.set(xlabel="latency (ms)", ylabel="frames")
        e2e_t.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{title}\n{summary}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
