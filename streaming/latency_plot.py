"""The bench report as a picture: latency of every frame over the run, and its distribution, one colour per variant.

In ``--fast`` mode nothing is timed on the (virtual) clock, so the model time of each rendered frame is drawn
instead. Uses matplotlib's Agg canvas directly, so it needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _points(xs: list[float | None], ys: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    keep = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    if not keep:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*keep, strict=True)
    return np.asarray(x, float), np.asarray(y, float)


def write_plot(report: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    timed = report["mode"] == "realtime"
    webrtc = report["options"]["webrtc"]
    key = "client_e2e_ms" if webrtc else "e2e_ms"
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    over_time, hist = fig.subplots(1, 2, width_ratios=[2, 1])
    for v in report["variants"]:
        pooled: list[np.ndarray] = []
        colour = None
        for i, session in enumerate(v["per_session"]):  # one colour per variant, its sessions alike
            series = session["series"]
            if timed:
                x, y = _points(series["t_s"], series[key])
            else:
                y = np.asarray(series["frame_ms"], float)
                x = np.arange(len(y), dtype=float)
            pooled.append(y)
            line = over_time.plot(x, y, lw=0.8, color=colour, label=v["name"] if i == 0 else None)[0]
            colour = line.get_color()
            if timed:  # the mouth actually shown: older than the frame when pictures were skipped
                px, py = _points(series["t_s"], series["picture_e2e_ms"])
                label = f"{v['name']}: shown picture" if i == 0 else None
                over_time.plot(px, py, lw=0.8, ls=":", color=colour, label=label)
        values = np.concatenate(pooled) if pooled else np.zeros(0)
        if values.size:
            hist.hist(values, bins=40, alpha=0.5, color=colour, label=v["name"])
    if timed:
        target = report["targets"]["e2e_p95_ms"]
        for ax in (over_time, hist):
            (ax.axhline if ax is over_time else ax.axvline)(target, color="red", ls="--", lw=1, label="target p95")
        what = "audio arrival -> " + ("WebRTC client" if webrtc else "frame out")
        over_time.set(xlabel="time since start (s)", ylabel="end-to-end latency (ms)", title=what)
        hist.set(xlabel="end-to-end latency (ms)", ylabel="frames", title="distribution")
    else:
        over_time.set(xlabel="rendered frame", ylabel="model time per frame (ms)", title="--fast: model time")
        hist.set(xlabel="model time per frame (ms)", ylabel="frames", title="distribution")
    over_time.legend(fontsize=7, loc="upper right")
    hist.legend(fontsize=7)
    fig.suptitle(f"facecast bench stream ({report['mode']}): {report['verdict']['summary']}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
