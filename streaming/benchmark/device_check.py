"""Device check: facecast's per-frame model compute on one GPU (or, without CUDA, the CPU), batched over sessions.

One video frame of one session is: ``steps`` DDIM steps of the L2V UNet on a (1, C, 32, 32) latent with its
conditions, then the autoencoder's decoder on the lower latent rows (``engine/pipeline.py``). B concurrent sessions
batched into one call make that (B, C, 32, 32). This script times that call for B in 1..64 (and more on a GPU when
64 still fits), in fp32 and fp16, eager, as one CUDA graph, and through ``torch.compile(mode="reduce-overhead")``
when those work, plus onnxruntime's CUDA provider when it is there. From the timings: frames/s per B and the
largest B whose batched call fits the frame budget (40 ms at 25 fps) with 50% headroom (<= 20 ms), i.e. how many
sessions one GPU serves by model compute alone (no audio features, landmark heatmaps, warping or pasting: those
run on the CPU per session).

Then the sessions sweep: ``facecast bench stream --sessions ...`` on the real live engine (every CPU-side part
included), K sessions on one shared model worker (batched) and on one thread each, so the largest K holding
25 new pictures/s with p95 <= 200 ms is measured, not derived (``phase_sessions``; torch on CUDA, onnxruntime on
the CPU). On a CPU it runs a shorter sweep and says what it skipped.

    python3 -m facecast.streaming.benchmark.device_check --out DIR [--seconds-budget 240] [--quick]
    python3 streaming/benchmark/device_check.py --out DIR [...]     # from a plain checkout

Writes DIR/device_check.json (machine, every timing, derived figures) after each phase, and prints a table.
It runs from a plain checkout, as a file (its module-level imports are the standard library's): when
``facecast.engine`` is not importable (the repository not pip-installed), it maps the package folders as
pyproject.toml's [tool.setuptools] package-dir does (FACECAST_FORCE_PATH_IMPORT=1 forces that, to test it). Its
imports are torch, numpy, safetensors and diffusers (through the model classes).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]  # streaming/benchmark/ -> the repository
FRAME_MS = 40.0  # 25 fps
HEADROOM_MS = 20.0  # one batched call may take half the frame budget
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)
EXTRA_BATCHES = (128, 256, 512)  # GPU only, measured while the best fp16 call still fits the budget
QUICK_CPU_BATCHES = (1, 2)
GPU_SESSIONS = (1, 4, 8, 16, 24, 32)  # the GPU target is 16 sessions at 25 fps
CPU_SESSIONS = (1, 2, 4)  # the CPU target is 2
SESSIONS_SECONDS = (10.0, 6.0)  # audio seconds per sweep variant: GPU, CPU


# ------------------------------------------------------------------------------------------ imports


def ensure_facecast_importable() -> str:
    """Make ``facecast.engine`` importable; returns how (installed, or mapped from the repository's folders)."""
    forced = os.environ.get("FACECAST_FORCE_PATH_IMPORT") == "1"
    if not forced:
        try:
            if importlib.util.find_spec("facecast.engine") is not None:
                return "installed"
        except ImportError:
            pass
    # pyproject.toml: package-dir = {"facecast" = "facecast", "facecast.engine" = "engine", ...}. Only the packages
    # this script needs are mapped; facecast.engine.models is found inside engine/ by the ordinary path finder.
    for name in [m for m in sys.modules if m == "facecast" or m.startswith("facecast.")]:
        del sys.modules[name]
    mapping = {"facecast": REPO / "facecast", "facecast.engine": REPO / "engine"}
    for name, folder in mapping.items():
        init = folder / "__init__.py"
        if init.is_file():
            spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:  # a namespace-like stand-in
            module = types.ModuleType(name)
            module.__path__ = [str(folder)]
            sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    return "repository folders" + (" (forced by FACECAST_FORCE_PATH_IMPORT=1)" if forced else "")


def decode_margin_rows(run: Any) -> int:
    """L2VConfig.decode_margin_rows (engine/config.py imports nothing beyond the standard library)."""
    from facecast.engine.config import L2VConfig

    return L2VConfig().decode_margin_rows


# ------------------------------------------------------------------------------------------ bookkeeping


class Run:
    """Results, the time budget, and the JSON file (rewritten after each phase and by the watchdog)."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.budget_s, self.t0 = out, budget_s, time.perf_counter()
        self.data: dict[str, Any] = {"timings": [], "skipped": [], "errors": [], "notes": []}
        self.lock = threading.Lock()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def skip(self, what: str, why: str) -> None:
        self.data["skipped"].append({"what": what, "why": why})
        self.log(f"skipped {what}: {why}")

    def error(self, what: str, exc: BaseException) -> str:
        msg = f"{type(exc).__name__}: {exc}"[:2000]
        self.data["errors"].append({"what": what, "error": msg, "traceback": traceback.format_exc()[-4000:]})
        self.log(f"FAILED {what}: {msg.splitlines()[0][:300] if msg else ''}")
        return msg

    def save(self) -> None:
        with self.lock:
            self.data["elapsed_s"] = round(self.elapsed(), 2)
            for _ in range(3):  # the watchdog may write while the main thread appends
                try:
                    text = json.dumps(self.data, indent=1, default=str)
                    break
                except RuntimeError:
                    time.sleep(0.05)
            else:
                return
            path = self.out / "device_check.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)


# ------------------------------------------------------------------------------------------ the work


class FrameWork:
    """B sessions' frame: ``steps`` DDIM steps of L2V (upper rows kept clean) + decode of the lower latent rows.

    The same arithmetic as ``LipSyncSession.render`` + ``decode_lower_faces`` + ``lay_lower_face``, as torch ops on
    the device.
    """

    def __init__(self, l2v: Any, codec: Any, schedule: Any, row: int, top: int) -> None:
        from facecast.engine.sampler import ddim_step

        self.l2v, self.codec, self.row, self.top, self.ddim_step = l2v, codec, row, top, ddim_step
        self.alphas = list(zip(schedule.alphas_cumprod, schedule.alphas_cumprod_prev, strict=True))

    def __call__(self, inp: dict[str, Any]) -> tuple[Any, Any]:
        import torch

        x, masked, row = inp["noisy"], inp["masked"], self.row
        n = len(self.alphas)
        for i, (alpha, alpha_prev) in enumerate(self.alphas):
            x0 = self.l2v(
                x,
                inp[f"t{i}"],
                masked,
                inp["identity"],
                inp["previous"],
                inp["heatmaps"],
                inp["driven_px"],
                inp["mel_window"],
            )
            x0 = torch.cat([masked[:, :, :row], x0[:, :, row:]], dim=2)  # the upper face stays clean
            x = self.ddim_step(x0, x, alpha, alpha_prev) if i + 1 < n else x0
        return x, self.codec.decode(x[:, :, self.top :])


def make_inputs(cfg: Any, schedule: Any, batch: int, device: Any, dtype: Any, seed: int = 0) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    c = cfg.autoencoder.latent_channels
    lat = cfg.face.crop_px // cfg.autoencoder.downscale
    mel = cfg.audio.mels_per_frame * cfg.audio.n_mels
    n_audio = 2 * cfg.l2v.audio_context_frames + 1

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=g)

    inp = {
        "noisy": randn(batch, c, lat, lat),
        "masked": randn(batch, c, lat, lat),
        "identity": randn(batch, c, lat, lat),
        "previous": randn(batch, c, lat, lat),
        "heatmaps": torch.rand(batch, cfg.l2v.heatmap_channels, lat, lat, generator=g),
        "driven_px": (0.25 + 0.5 * torch.rand(batch, 37, 2, generator=g)) * cfg.face.crop_px,
        "mel_window": randn(batch, n_audio, mel),
    }
    inp = {k: v.to(device=device, dtype=dtype) for k, v in inp.items()}
    for i, ts in enumerate(schedule.timesteps):
        inp[f"t{i}"] = torch.full((batch,), int(ts), dtype=torch.int64, device=device)
    return inp


def measure(fn: Any, device: Any, warmup: int, repeats: int, max_s: float, min_repeats: int = 3) -> dict[str, Any]:
    """Median of up to ``repeats`` timed calls (CUDA events around each; synchronised), within ``max_s``."""
    import torch

    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times: list[float] = []
    start_all = time.perf_counter()
    for _ in range(repeats):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        if len(times) >= min(min_repeats, repeats) and time.perf_counter() - start_all > max_s:
            break
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 4),
        "min_ms": round(times[0], 4),
        "max_ms": round(times[-1], 4),
        "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 4),
        "n": len(times),
    }


def max_abs(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).abs().max())


# ------------------------------------------------------------------------------------------ machine


def machine_info(torch: Any, device: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    for name in ("numpy", "diffusers", "safetensors", "huggingface_hub", "onnxruntime", "triton"):
        try:
            mod = __import__(name)
            info[name] = mod.__version__
            info[f"{name}_path"] = str(Path(mod.__file__).parent)
        except Exception as e:  # noqa: BLE001 - a report, not a requirement
            info[name] = f"not importable: {type(e).__name__}: {e}"[:200]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            gpu=p.name,
            gpu_capability=f"{p.major}.{p.minor}",
            gpu_multiprocessors=p.multi_processor_count,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
        try:
            q = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu"
            r = subprocess.run(
                ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True, timeout=15
            )
            info["nvidia_smi"] = (r.stdout or r.stderr).strip()[:500]
        except Exception as e:  # noqa: BLE001
            info["nvidia_smi"] = f"unavailable: {e}"[:200]
    return info


# ------------------------------------------------------------------------------------------ phases


def onnxruntime_providers() -> list[str] | str:
    try:
        import onnxruntime as ort

        return list(ort.get_available_providers())
    except Exception as e:  # noqa: BLE001
        return f"onnxruntime not importable: {type(e).__name__}: {e}"[:300]


def derive(run: Run) -> None:
    """Per configuration: frames/s per B, the largest B within 20 ms and within 40 ms, and a headline."""
    configs: dict[str, dict[int, float]] = {}
    for t in run.data["timings"]:
        if t["what"] == "frame":
            key = f"{t['mode']}/{t['dtype']}/{t['steps']}step"
            configs.setdefault(key, {})[t["batch"]] = t["median_ms"]
    derived: dict[str, Any] = {}
    for key, by_b in configs.items():
        rows = {
            b: {"ms": ms, "frames_per_s": round(b * 1000 / ms, 1), "fits_20ms": ms <= HEADROOM_MS}
            for b, ms in sorted(by_b.items())
        }
        fit20 = [b for b, ms in by_b.items() if ms <= HEADROOM_MS]
        fit40 = [b for b, ms in by_b.items() if ms <= FRAME_MS]
        best20 = max(fit20) if fit20 else None
        derived[key] = {
            "per_batch": rows,
            "max_batch_within_20ms": best20,
            "max_batch_within_40ms": max(fit40) if fit40 else None,
            "frames_per_s_at_that_batch": rows[best20]["frames_per_s"] if best20 else None,
            "largest_batch_measured": max(by_b),
            "limit_not_reached": bool(fit20) and max(fit20) == max(by_b),
        }
    run.data["derived"] = derived
    heads = {}
    for steps in (1, 2):
        cands = [(v["max_batch_within_20ms"] or 0, k) for k, v in derived.items() if k.endswith(f"/{steps}step")]
        if cands:
            b, k = max(cands)
            b1 = [
                v["per_batch"][1]["ms"]
                for kk, v in derived.items()
                if kk.endswith(f"/{steps}step") and 1 in v["per_batch"]
            ]
            heads[f"{steps}step"] = {
                "best_config": k if b else None,
                "fastest_b1_ms": round(min(b1), 2) if b1 else None,
                "sessions_per_gpu_by_model_compute_20ms": b,
                "frames_per_s": derived[k]["frames_per_s_at_that_batch"],
                "at_least": derived[k]["limit_not_reached"],
            }
    run.data["headline"] = heads


def phase_eager(run: Run, ctx: dict[str, Any], batches: list[int], share_s: float) -> None:
    import torch

    device, dtypes = ctx["device"], ctx["dtypes"]
    jobs = [(dt, steps, b) for dt in dtypes for steps in ctx["steps"] for b in batches]
    comp_batches = batches if not ctx["quick"] else batches[:1]
    comps = [(dt, what, b) for dt in dtypes for what in ("unet", "decode", "a2l") for b in comp_batches]
    deadline = run.elapsed() + share_s
    top = ctx["top"]
    per = share_s / max(1, len(jobs) + 0.3 * len(comps))
    run.log(f"eager: {len(jobs)} frame timings + {len(comps)} component timings, about {per:.2f} s each at most")
    for dt, steps, b in jobs:
        if run.elapsed() > deadline:
            run.skip(f"eager {dt} {steps}step B={b}", "phase time share used up")
            continue
        work = ctx["work"][(dt, steps)]
        inp = make_inputs(ctx["cfg"], ctx["schedules"][steps], b, device, ctx["torch_dtype"][dt])
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with torch.inference_mode():
                r = measure(lambda w=work, i=inp: w(i), device, ctx["warmup"], ctx["repeats"], per)
            if device.type == "cuda":
                r["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory at a large B: report and go on
            run.error(f"eager {dt} {steps}step B={b}", e)
            continue
        run.data["timings"].append({"what": "frame", "mode": "eager", "dtype": dt, "steps": steps, "batch": b, **r})
        run.log(f"eager {dt} {steps}step B={b:>3}: {r['median_ms']:9.3f} ms (n={r['n']})")
    for dt, what, b in comps:
        if run.elapsed() > deadline:
            run.skip(f"eager component {what} {dt} B={b}", "phase time share used up")
            continue
        inp = make_inputs(ctx["cfg"], ctx["schedules"][1], b, device, ctx["torch_dtype"][dt])
        m = ctx["models"][dt]
        if what == "unet":

            def fn(m: Any = m, i: dict = inp) -> Any:
                keys = ("noisy", "t0", "masked", "identity", "previous", "heatmaps", "driven_px", "mel_window")
                return m["l2v"](*[i[k] for k in keys])
        elif what == "decode":

            def fn(m: Any = m, i: dict = inp) -> Any:
                return m["codec"].decode(i["noisy"][:, :, top:])
        else:
            cfg = ctx["cfg"]
            tdt = ctx["torch_dtype"][dt]
            mel = torch.randn(b, 1, cfg.audio.mels_per_frame * cfg.audio.n_mels, device=device, dtype=tdt)
            spk = torch.randn(b, cfg.a2l.speaker_dim, device=device, dtype=tdt)
            ref = torch.rand(b, 68, 2, device=device, dtype=tdt) * cfg.face.crop_px
            state = torch.zeros(cfg.a2l.layers, b, cfg.a2l.state_width, device=device, dtype=tdt)

            def fn(m: Any = m, a: tuple = (mel, spk, ref, state)) -> Any:
                return m["a2l"](*a)

        try:
            with torch.inference_mode():
                r = measure(fn, device, ctx["warmup"], ctx["repeats"], per * 0.3)
        except Exception as e:  # noqa: BLE001
            run.error(f"eager component {what} {dt} B={b}", e)
            continue
        run.data["timings"].append({"what": what, "mode": "eager", "dtype": dt, "steps": None, "batch": b, **r})
        run.log(f"eager {dt} {what:>6} B={b:>3}: {r['median_ms']:9.3f} ms (n={r['n']})")


def capture_graph(work: Any, inp: dict[str, Any]) -> tuple[Any, Any]:
    """One CUDA graph of ``work(inp)`` over static inputs; returns (graph, static outputs)."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(s):
        for _ in range(3):
            work(inp)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = work(inp)
    torch.cuda.synchronize()
    return graph, out


def phase_graphs(run: Run, ctx: dict[str, Any], batches: list[int], share_s: float) -> dict[str, Any]:
    import torch

    device = ctx["device"]
    status: dict[str, Any] = {}
    jobs = [(dt, steps, b) for dt in ctx["dtypes"] for steps in ctx["steps"] for b in batches]
    deadline = run.elapsed() + share_s
    per = share_s / max(1, len(jobs)) * 0.6  # capture costs time too
    run.log(f"cuda graphs: {len(jobs)} captures and timings, about {per:.2f} s of replays each at most")
    for dt, steps, b in jobs:
        if run.elapsed() > deadline:
            run.skip(f"graph {dt} {steps}step B={b}", "phase time share used up")
            continue
        if len(status) >= 3:
            run.skip(f"graph {dt} {steps}step B={b}", "three captures failed already")
            continue
        work = ctx["work"][(dt, steps)]
        inp = make_inputs(ctx["cfg"], ctx["schedules"][steps], b, device, ctx["torch_dtype"][dt])
        try:
            t = time.perf_counter()
            graph, out = capture_graph(work, inp)
            capture_s = time.perf_counter() - t
            with torch.no_grad():
                ref = work(inp)
            graph.replay()
            torch.cuda.synchronize()
            diff = max(max_abs(out[0], ref[0]), max_abs(out[1], ref[1]))
            r = measure(graph.replay, device, ctx["warmup"], ctx["repeats"], per)
            del graph, out
        except Exception as e:  # noqa: BLE001
            status[f"{dt}/{steps}step/B{b}"] = run.error(f"graph {dt} {steps}step B={b}", e)
            continue
        r.update(capture_s=round(capture_s, 3), max_abs_vs_eager=diff)
        run.data["timings"].append({"what": "frame", "mode": "graph", "dtype": dt, "steps": steps, "batch": b, **r})
        run.log(f"graph {dt} {steps}step B={b:>3}: {r['median_ms']:9.3f} ms (n={r['n']}, |graph-eager| {diff:.2g})")
    return status


def phase_extend(run: Run, ctx: dict[str, Any], share_s: float) -> None:
    """GPU: past B=64, while the best fp16 call (graph, else eager) still fits 20 ms, try larger B."""
    import torch

    device = ctx["device"]
    modes = {t["mode"] for t in run.data["timings"] if t["what"] == "frame" and t["dtype"] == "fp16"}
    mode = "graph" if "graph" in modes else "eager"
    deadline = run.elapsed() + share_s
    for steps in ctx["steps"]:
        last = [
            t
            for t in run.data["timings"]
            if t["what"] == "frame" and t["mode"] == mode and t["dtype"] == "fp16" and t["steps"] == steps
        ]
        if not last or max(last, key=lambda t: t["batch"])["median_ms"] > HEADROOM_MS:
            continue
        work = ctx["work"][("fp16", steps)]
        for b in EXTRA_BATCHES:
            if run.elapsed() > deadline:
                run.skip(f"extend {mode} fp16 {steps}step B={b}", "phase time share used up")
                break
            inp = make_inputs(ctx["cfg"], ctx["schedules"][steps], b, device, torch.float16)
            try:
                if mode == "graph":
                    graph, _ = capture_graph(work, inp)
                    r = measure(graph.replay, device, ctx["warmup"], ctx["repeats"], 1.0)
                    del graph
                else:
                    with torch.inference_mode():
                        r = measure(lambda w=work, i=inp: w(i), device, ctx["warmup"], ctx["repeats"], 1.0)
            except Exception as e:  # noqa: BLE001
                run.error(f"extend {mode} fp16 {steps}step B={b}", e)
                break
            run.data["timings"].append(
                {"what": "frame", "mode": mode, "dtype": "fp16", "steps": steps, "batch": b, "extended": True, **r}
            )
            run.log(f"{mode} fp16 {steps}step B={b:>3}: {r['median_ms']:9.3f} ms (n={r['n']}, extended)")
            if r["median_ms"] > FRAME_MS:
                break


def phase_compile(run: Run, ctx: dict[str, Any], batches: list[int], reserve_s: float) -> dict[str, Any]:
    """torch.compile(mode="reduce-overhead") of the whole frame, fp16, the default 2 steps, a few B in budget."""
    import torch

    device = ctx["device"]
    status: dict[str, Any] = {}
    steps = max(ctx["steps"])
    dt = "fp16" if "fp16" in ctx["dtypes"] else "fp32"
    # The B most worth it: the largest that fit 20 ms uncompiled, the next one up, then B=1.
    fit = [
        t["batch"]
        for t in run.data["timings"]
        if t["what"] == "frame" and t["dtype"] == dt and t["steps"] == steps and t["median_ms"] <= HEADROOM_MS
    ]
    order: list[int] = []
    best = max(fit) if fit else batches[0]
    for b in (best, *[x for x in batches if x > best][:1], 1):
        if b not in order:
            order.append(b)
    work = ctx["work"][(dt, steps)]

    def frame(inp: dict[str, Any]) -> Any:
        return work(inp)

    try:
        compiled = torch.compile(frame, mode="reduce-overhead", dynamic=False)
    except Exception as e:  # noqa: BLE001
        status["error"] = run.error("torch.compile", e)
        return status
    first_compile_s = None
    for b in order:
        need = 60.0 if first_compile_s is None else 1.3 * first_compile_s + 5
        if run.left() - reserve_s < need:
            run.skip(f"compile {dt} {steps}step B={b}", f"{run.left():.0f} s left, a compile needs about {need:.0f} s")
            continue
        inp = make_inputs(ctx["cfg"], ctx["schedules"][steps], b, device, ctx["torch_dtype"][dt])

        def call(c: Any = compiled, i: dict = inp) -> Any:
            torch.compiler.cudagraph_mark_step_begin()
            return c(i)

        try:
            run.log(f"compile {dt} {steps}step B={b}: compiling (can take a minute) ...")
            t = time.perf_counter()
            with torch.no_grad():
                out = call()
                torch.cuda.synchronize()
                compile_s = time.perf_counter() - t
                first_compile_s = first_compile_s or compile_s
                ref = work(inp)
                out = call()
                diff = max(max_abs(out[0], ref[0]), max_abs(out[1], ref[1]))
                r = measure(call, device, ctx["warmup"], ctx["repeats"], 1.5)
        except Exception as e:  # noqa: BLE001
            status[f"B{b}"] = run.error(f"compile {dt} {steps}step B={b}", e)
            break
        r.update(compile_s=round(compile_s, 1), max_abs_vs_eager=diff)
        run.data["timings"].append({"what": "frame", "mode": "compile", "dtype": dt, "steps": steps, "batch": b, **r})
        run.log(f"compile {dt} {steps}step B={b:>3}: {r['median_ms']:9.3f} ms (compile {compile_s:.0f} s, n={r['n']})")
        run.save()
    return status


def phase_ort(run: Run, ctx: dict[str, Any], provider: str, batches: list[int], share_s: float) -> dict[str, Any]:
    """onnxruntime with ``provider``: L2V and decoder exported (TorchScript exporter, static B), steps + decode."""
    import numpy as np
    import torch

    info: dict[str, Any] = {}
    try:
        import onnxruntime as ort
    except Exception as e:  # noqa: BLE001
        info["available"] = f"onnxruntime not importable: {e}"
        run.skip("onnxruntime", info["available"])
        return info
    info["version"] = ort.__version__
    info["providers"] = ort.get_available_providers()
    if provider not in info["providers"]:
        run.skip(f"onnxruntime {provider}", f"not among the available providers {info['providers']}")
        return info
    import tempfile

    deadline = run.elapsed() + share_s
    cfg, steps = ctx["cfg"], max(ctx["steps"])
    fp32 = ctx["models"]["fp32"]
    l2v = copy.deepcopy(fp32["l2v"]).float().cpu().eval()

    class Decode(torch.nn.Module):
        def __init__(self, codec: Any) -> None:
            super().__init__()
            self.codec = codec

        def forward(self, z: Any) -> Any:
            return self.codec.decode(z)

    dec = Decode(copy.deepcopy(fp32["codec"]).float().cpu().eval())
    keys = ("noisy", "t0", "masked", "identity", "previous", "heatmaps", "driven_px", "mel_window")
    names = ("noisy", "timestep", "masked", "identity", "previous", "heatmaps", "driven_px", "mel_window")
    from facecast.engine.sampler import ddim_step

    sched = ctx["schedules"][steps]
    row, top = ctx["row"], ctx["top"]
    with tempfile.TemporaryDirectory() as tmp:
        for b in batches:
            if run.elapsed() > deadline:
                run.skip(f"onnxruntime {provider} B={b}", "phase time share used up")
                continue
            try:
                t = time.perf_counter()
                inp = {k: v.cpu() for k, v in make_inputs(cfg, sched, b, torch.device("cpu"), torch.float32).items()}
                p_l2v, p_dec = Path(tmp) / f"l2v{b}.onnx", Path(tmp) / f"dec{b}.onnx"
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        l2v, tuple(inp[k] for k in keys), str(p_l2v), dynamo=False, opset_version=17,
                        input_names=list(names), output_names=["x0"],
                    )  # fmt: skip
                    torch.onnx.export(
                        dec, (inp["noisy"][:, :, top:].contiguous(),), str(p_dec), dynamo=False, opset_version=17,
                        input_names=["latents"], output_names=["images"],
                    )  # fmt: skip
                export_s = time.perf_counter() - t
                so = ort.SessionOptions()
                s_l2v = ort.InferenceSession(str(p_l2v), so, providers=[provider])
                s_dec = ort.InferenceSession(str(p_dec), so, providers=[provider])
                feeds = {n: inp[k].numpy() for n, k in zip(names, keys, strict=True)}

                def frame(feeds: dict = feeds, b: int = b, s_l2v: Any = s_l2v, s_dec: Any = s_dec) -> Any:
                    x = feeds["noisy"]
                    for i, ts in enumerate(sched.timesteps):
                        f = dict(feeds, noisy=x, timestep=np.full((b,), int(ts), np.int64))
                        x0 = s_l2v.run(["x0"], f)[0]
                        x0[:, :, :row] = feeds["masked"][:, :, :row]
                        a, ap = sched.alphas_cumprod[i], sched.alphas_cumprod_prev[i]
                        x = ddim_step(x0, x, a, ap) if i + 1 < len(sched.timesteps) else x0
                    return s_dec.run(["images"], {"latents": np.ascontiguousarray(x[:, :, top:])})[0]

                r = measure(frame, torch.device("cpu"), ctx["warmup"], ctx["repeats"], 1.0)
            except Exception as e:  # noqa: BLE001
                info[f"B{b}"] = run.error(f"onnxruntime {provider} B={b}", e)
                break
            r.update(export_s=round(export_s, 1), provider=provider)
            mode = "ort-cuda" if provider.startswith("CUDA") else "ort-cpu"
            run.data["timings"].append(
                {"what": "frame", "mode": mode, "dtype": "fp32", "steps": steps, "batch": b, **r}
            )  # fmt: skip
            run.log(f"{mode} fp32 {steps}step B={b:>3}: {r['median_ms']:9.3f} ms (host arrays in/out, n={r['n']})")
    return info


# ------------------------------------------------------------------------------------------ report


def phase_sessions(run: Run, cuda: bool, sessions: tuple[int, ...], export: Path | None, share_s: float) -> None:
    """``facecast bench stream --sessions`` in a subprocess (its own event loop and threads, as ``serve`` runs)."""
    # share_s ends before the watchdog (budget + 60 s): give the whole run --seconds-budget 420 on a GPU
    if run.data.get("facecast_import") != "installed":
        run.skip("sessions sweep", "facecast is not pip-installed here: `python -m facecast.cli bench stream` needs it")
        return
    backend = "torch" if cuda else "onnxruntime"
    seconds = SESSIONS_SECONDS[0 if cuda else 1]
    out = run.out / "sessions_sweep.json"
    cmd = [
        sys.executable,
        "-m",
        "facecast.cli",
        "bench",
        "stream",
        "--backend",
        backend,
        "--device",
        "cuda" if cuda else "cpu",
    ]
    cmd += ["--sessions", ",".join(map(str, sessions)), "--seconds", str(seconds), "--json", str(out)]
    if export is not None and not cuda:
        cmd += ["--export", str(export)]
    run.log(f"sessions sweep ({backend}, K = {list(sessions)}, {seconds:g} s each): {' '.join(cmd[1:])}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30.0, share_s), cwd=REPO)
    except subprocess.TimeoutExpired:
        run.skip("sessions sweep", f"did not finish in its share of the budget ({share_s:.0f} s)")
        return
    if done.returncode != 0 or not out.is_file():
        run.data["errors"].append({"what": "sessions sweep", "error": done.stderr[-4000:]})
        run.log(f"FAILED sessions sweep (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        return
    report = json.loads(out.read_text())
    run.data["sessions_sweep"] = {"command": cmd[1:], "backend": backend, "sweep": report.get("sessions_sweep")}
    for s in report.get("sessions_sweep") or []:
        best = s["largest_k_meeting_targets"]
        run.log(f"sessions sweep {s['backend']} {s['steps']} step(s): largest K meeting the targets {best}")


def print_table(run: Run) -> None:
    frames = [t for t in run.data["timings"] if t["what"] == "frame"]
    comps = [t for t in run.data["timings"] if t["what"] != "frame"]
    batches = sorted({t["batch"] for t in run.data["timings"]})
    m = run.data.get("machine", {})
    print(flush=True)
    print(f"== facecast device check: {m.get('gpu') or 'CPU'} | torch {m.get('torch')} cuda {m.get('torch_cuda')}")
    print("median ms per batched call (B sessions, one frame each); * = fits 20 ms (25 fps, 50% headroom)")
    head = f"{'config':<24}" + "".join(f"{'B=' + str(b):>10}" for b in batches)
    print(head)
    keys = sorted({(t["mode"], t["dtype"], t["steps"]) for t in frames})
    for mode, dt, steps in keys:
        by_b = {t["batch"]: t["median_ms"] for t in frames if (t["mode"], t["dtype"], t["steps"]) == (mode, dt, steps)}
        cells = "".join(
            f"{(f'{by_b[b]:.2f}' + ('*' if by_b[b] <= HEADROOM_MS else ' ')) if b in by_b else '-':>10}"
            for b in batches
        )
        print(f"{f'{mode} {dt} {steps}step':<24}{cells}")
    for what in ("unet", "decode", "a2l"):
        for dt in ("fp32", "fp16"):
            by_b = {t["batch"]: t["median_ms"] for t in comps if t["what"] == what and t["dtype"] == dt}
            if by_b:
                cells = "".join(f"{f'{by_b[b]:.2f}' if b in by_b else '-':>10}" for b in batches)
                print(f"{f'  part {what} {dt}':<24}{cells}")
    print("frames/s = B * 1000 / ms; largest B within 20 ms per config:")
    for key, d in sorted(run.data.get("derived", {}).items()):
        b = d["max_batch_within_20ms"]
        more = " (largest measured: more may fit)" if d["limit_not_reached"] else ""
        fps = d["frames_per_s_at_that_batch"]
        print(f"  {key:<24} B<=20ms: {b if b else 'none':>4}{more}  frames/s there: {fps if fps else '-'}")
    for k, h in sorted(run.data.get("headline", {}).items()):
        if h["sessions_per_gpu_by_model_compute_20ms"]:
            at_least = ">= " if h["at_least"] else ""
            print(
                f"HEADLINE {k}: {at_least}{h['sessions_per_gpu_by_model_compute_20ms']} sessions per device by model "
                f"compute within 20 ms a frame ({h['best_config']}, {h['frames_per_s']} frames/s)"
            )
        else:
            print(f"HEADLINE {k}: no batched call fits 20 ms; fastest B=1 call {h['fastest_b1_ms']} ms")
    for s in run.data["skipped"]:
        print(f"skipped: {s['what']}: {s['why']}")
    for e in run.data["errors"]:
        print(f"error: {e['what']}: {e['error'].splitlines()[0][:200] if e['error'] else ''}")
    print(f"total {run.elapsed():.1f} s; JSON: {run.out / 'device_check.json'}", flush=True)


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for device_check.json")
    ap.add_argument("--seconds-budget", type=float, default=None, help="keep the run under this (240; --quick: 90)")
    ap.add_argument("--quick", action="store_true", help="few repeats and batch sizes (a CPU smoke run)")
    ap.add_argument("--model-dir", type=Path, default=REPO / "engine" / "weights" / "default")
    ap.add_argument("--device", default="auto", help="auto (cuda when there), cuda or cpu")
    ap.add_argument("--batches", default=None, help="comma-separated B (default 1,2,4,8,16,32,64; quick CPU: 1,2)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--ort-cpu", action="store_true", help="also time onnxruntime's CPU provider (tests that path)")
    ap.add_argument("--no-sessions", action="store_true", help="skip the sessions sweep (facecast bench stream)")
    ap.add_argument("--export", type=Path, default=None, help="export folder for the CPU sweep (default: a temp one)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.seconds_budget is None:
        args.seconds_budget = 90.0 if args.quick else 240.0
    run = Run(args.out, args.seconds_budget)

    # A watchdog: past the budget (plus a minute of slack for a phase in flight) write what there is and exit.
    def watchdog() -> None:
        run.data["notes"].append(f"stopped by the watchdog at {run.elapsed():.0f} s (budget {run.budget_s:.0f} s)")
        run.log("watchdog: over budget, writing what there is and exiting")
        try:
            derive(run)
            run.save()
            print_table(run)
        finally:
            os._exit(3)

    timer = threading.Timer(args.seconds_budget + 60, watchdog)
    timer.daemon = True
    timer.start()

    run.data["facecast_import"] = ensure_facecast_importable()
    run.log(f"facecast imported from: {run.data['facecast_import']}")
    import torch

    from facecast.engine import checkpoint
    from facecast.engine.sampler import DDIMSchedule

    run.data["facecast_engine_path"] = str(Path(checkpoint.__file__).parent)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    run.data["machine"] = machine_info(torch, device)
    run.data["args"] = {k: str(v) for k, v in vars(args).items()}
    run.log(f"device {device} {run.data['machine'].get('gpu', '')} torch {torch.__version__} cuda {torch.version.cuda}")
    if not cuda:
        run.skip("CUDA", "no CUDA device: timing the CPU instead (fp32 only, perf_counter)")

    # ---- model
    t = time.perf_counter()
    cfg = checkpoint.load_config(args.model_dir)
    parts = {p: checkpoint.load_part(args.model_dir, p, cfg) for p in checkpoint.PARTS}
    latent_px = cfg.face.crop_px // cfg.autoencoder.downscale
    row = cfg.l2v.mask_top_px * latent_px // cfg.face.crop_px
    top = max(0, row - decode_margin_rows(run))
    dtypes = ["fp16", "fp32"] if cuda else ["fp32"]  # in order of interest: a phase out of time skips the last
    if not cuda:
        run.skip("fp16", "CPU: half precision is not a CPU serving mode")
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16}
    models = {}
    for dt in dtypes:
        src = parts if dt == "fp32" else {k: copy.deepcopy(v) for k, v in parts.items()}
        mods = {k: v.to(device, torch_dtype[dt]).eval() for k, v in src.items()}
        models[dt] = {"l2v": mods["l2v"], "codec": mods["autoencoder"], "a2l": mods["a2l"]}
    steps_list = [2, 1]  # 2: the default (InferenceConfig.steps)
    schedules = {s: DDIMSchedule.from_config(cfg.l2v, s) for s in steps_list}
    work = {
        (dt, s): FrameWork(models[dt]["l2v"], models[dt]["codec"], schedules[s], row, top)
        for dt in dtypes
        for s in steps_list
    }
    run.data["model"] = {
        "model_dir": str(args.model_dir),
        "params": {p: sum(x.numel() for x in m.parameters()) for p, m in parts.items()},
        "latent": [cfg.autoencoder.latent_channels, latent_px, latent_px],
        "mask_top_row": row,
        "decode_top_row": top,
        "decoded_image": [3, (latent_px - top) * cfg.autoencoder.downscale, cfg.face.crop_px],
        "timesteps": {s: list(schedules[s].timesteps) for s in steps_list},
        "load_s": round(time.perf_counter() - t, 2),
    }
    run.log(f"model loaded in {run.data['model']['load_s']} s: {run.data['model']['params']} parameters")

    quick = args.quick
    if args.batches:
        batches = [int(x) for x in args.batches.split(",")]
    elif quick and not cuda:
        batches = list(QUICK_CPU_BATCHES)
    else:
        batches = list(DEFAULT_BATCHES)
    ctx = {
        "device": device,
        "cfg": cfg,
        "dtypes": dtypes,
        "torch_dtype": torch_dtype,
        "steps": steps_list,
        "schedules": schedules,
        "work": work,
        "models": models,
        "row": row,
        "top": top,
        "quick": quick,
        "warmup": 1 if quick else (5 if cuda else 2),
        "repeats": 2 if quick else (30 if cuda else 10),
    }

    # ---- fp16 vs fp32 on the same inputs (is fp16 usable at all?)
    if "fp16" in dtypes:
        try:
            with torch.inference_mode():
                i32 = make_inputs(cfg, schedules[2], 2, device, torch.float32)
                i16 = {k: (v.half() if v.is_floating_point() else v) for k, v in i32.items()}
                a, b = work[("fp32", 2)](i32), work[("fp16", 2)](i16)
            run.data["fp16_vs_fp32"] = {
                "latent_max_abs": max_abs(a[0], b[0]),
                "image_max_abs": max_abs(a[1], b[1]),
                "image_mean_abs": float((a[1].float() - b[1].float()).abs().mean()),
                "fp16_finite": bool(torch.isfinite(b[1]).all()),
                "note": "images in [-1, 1]",
            }
            run.log(f"fp16 vs fp32 (B=2, 2 steps): {run.data['fp16_vs_fp32']}")
        except Exception as e:  # noqa: BLE001
            run.error("fp16 vs fp32 check", e)
    run.save()

    # ---- phases, each with a share of the budget
    budget = args.seconds_budget
    phase_eager(run, ctx, batches, share_s=max(5.0, (0.30 if cuda else 0.75) * run.left()))
    derive(run)
    run.save()
    if cuda:
        try:
            status = phase_graphs(run, ctx, batches, share_s=max(5.0, 0.35 * run.left()))
            run.data["cuda_graph_errors"] = status
        except Exception as e:  # noqa: BLE001
            run.data["cuda_graph_errors"] = {"all": run.error("cuda graphs", e)}
        derive(run)
        run.save()
        phase_extend(run, ctx, share_s=min(30.0, 0.15 * run.left()))
        derive(run)
        run.save()
    else:
        run.skip("cuda graphs", "no CUDA device")
        run.skip("larger batches than 64", "no CUDA device")

    ort_providers = onnxruntime_providers()
    ort_cuda = "CUDAExecutionProvider" in ort_providers
    ort_share = min(40.0, 0.2 * run.left()) if (cuda and ort_cuda) or args.ort_cpu else 0.0
    if args.no_compile:
        run.skip("torch.compile", "--no-compile")
    elif not cuda:
        run.skip("torch.compile", "no CUDA device (reduce-overhead means CUDA graphs; a CPU compile takes minutes)")
    elif quick:
        run.skip("torch.compile", "--quick")
    else:
        run.data["compile_errors"] = phase_compile(run, ctx, batches, reserve_s=ort_share + 10)
        derive(run)
        run.save()

    ort_batches = [b for b in (1, 16, 64) if b in batches] or batches[:1]
    run.data["onnxruntime_providers"] = ort_providers
    if cuda and ort_cuda:
        run.data["onnxruntime"] = phase_ort(run, ctx, "CUDAExecutionProvider", ort_batches, share_s=ort_share)
    else:
        why = "no CUDA device" if not cuda else "not available in this onnxruntime build"
        run.skip("onnxruntime CUDAExecutionProvider", f"{why} (providers: {ort_providers})")
    if args.ort_cpu:
        run.data["onnxruntime_cpu"] = phase_ort(run, ctx, "CPUExecutionProvider", batches[:1], share_s=ort_share)

    if args.no_sessions:
        run.skip("sessions sweep", "--no-sessions")
    else:
        if not cuda:
            run.skip(f"sessions sweep at K > {max(CPU_SESSIONS)}", "no CUDA device (the CPU sweep stops at its target)")
        phase_sessions(
            run, cuda, GPU_SESSIONS if cuda else CPU_SESSIONS, args.export, share_s=max(30.0, run.left() + 50)
        )
        run.save()

    run.data["notes"].append(
        "frame = L2V x steps (with the DDIM update and the clean upper rows) + decode of the lower latent rows, "
        "B sessions in one call; CPU-side work per session (mel, A2L's host round trip, heatmaps, warp, paste) "
        "is not in these numbers"
    )
    derive(run)
    run.data["budget_s"] = budget
    run.save()
    timer.cancel()
    print_table(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
