"""The sessions sweep of ``facecast bench stream --sessions 1,2,4,8``: how many sessions one process holds.

Each K > 1 runs twice in the same bench: every engine on one shared ``ModelWorker`` (frames batched across
sessions, ``WORKER_SHARED``) and every engine on its own worker thread (``WORKER_OWN``, one thread per session, as
before batching). Per K this reports delivered fps, new pictures/s while speaking per session (the worst session),
p95 end-to-end, RSS per session, the batched / own-thread throughput ratio, and the largest K that holds the
targets with the shared worker.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

WORKER_SHARED = "shared"  # one ModelWorker for all K engines: frames batched across sessions
WORKER_OWN = "own"  # each engine its own worker thread
WORKER_MODES = (WORKER_SHARED, WORKER_OWN)


def worker_modes(sessions: int, modes: tuple[str, ...]) -> tuple[str, ...]:
    """One session is the same either way: it runs once, as shared."""
    return (WORKER_SHARED,) if sessions == 1 else modes


def lookup(d: dict[str, Any] | None, *path: str) -> Any:
    """``d[path[0]][path[1]]...``, or None where a level is missing (report fields that a mode leaves out)."""
    for key in path:
        if d is None:
            return None
        d = d.get(key)
    return d


def _row(v: dict[str, Any]) -> dict[str, Any]:
    e2e = "client_e2e" if lookup(v, "latency_ms", "client_e2e") is not None else "e2e"
    return {
        "variant": v["name"],
        "delivered_fps": v["fps"],
        "new_pictures_per_s_per_session": v["generated_fps_while_speaking"],
        "throughput_fps": v["throughput_fps"],
        "e2e_p95_ms": lookup(v, "latency_ms", e2e, "p95"),
        "rss_per_session_mb": lookup(v, "memory", "rss_per_session_mb"),
        "skipped": v["frames"]["skipped"],
        "met": lookup(v, "verdict", "met"),
    }


def sessions_sweep(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (backend, steps): per K the shared and own-thread rows, their throughput ratio, and the largest K
    whose shared run met every measured target (25 new pictures/s per session, p95 <= 200 ms, ...)."""
    groups: dict[tuple[str, int], dict[int, dict[str, dict[str, Any]]]] = {}
    for v in variants:
        groups.setdefault((v["backend"], v["steps"]), {}).setdefault(v["sessions"], {})[v["worker"]] = v
    out = []
    for (backend, steps), by_k in groups.items():
        rows = []
        for k in sorted(by_k):
            modes = by_k[k]
            shared, own = modes.get(WORKER_SHARED), modes.get(WORKER_OWN)
            ratio = None
            if shared and own and own["throughput_fps"]:
                ratio = round(shared["throughput_fps"] / own["throughput_fps"], 2)
            rows.append(
                {
                    "sessions": k,
                    "shared": _row(shared) if shared else None,
                    "own_thread": _row(own) if own else None,
                    "batched_vs_own_thread_throughput": ratio,
                }
            )
        held = [r["sessions"] for r in rows if r["shared"] and r["shared"]["met"]]
        out.append(
            {"backend": backend, "steps": steps, "per_k": rows, "largest_k_meeting_targets": max(held, default=None)}
        )
    return out


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def sweep_table(sweep: list[dict[str, Any]]) -> list[Table]:
    tables = []
    for s in sweep:
        t = Table(
            title=f"sessions sweep, {s['backend']} {s['steps']} step(s): largest K meeting the targets with the "
            f"shared worker: {s['largest_k_meeting_targets'] or 'none'}"
        )
        for col in (
            "K",
            "worker",
            "fps out",
            "new/s per session",
            "throughput/s",
            "e2e p95 ms",
            "RSS/session MB",
            "skipped",
            "met",
            "batched/own",
        ):
            t.add_column(col, justify="right")
        for r in s["per_k"]:
            for mode in ("shared", "own_thread"):
                row = r[mode]
                if row is None:
                    continue
                t.add_row(
                    str(r["sessions"]),
                    mode,
                    _num(row["delivered_fps"]),
                    _num(row["new_pictures_per_s_per_session"]),
                    _num(row["throughput_fps"]),
                    _num(row["e2e_p95_ms"], "{:.0f}"),
                    _num(row["rss_per_session_mb"]),
                    str(row["skipped"]),
                    {True: "yes", False: "no", None: "–"}[row["met"]],
                    _num(r["batched_vs_own_thread_throughput"], "{:.2f}") if mode == "shared" else "",
                )
        tables.append(t)
    return tables
