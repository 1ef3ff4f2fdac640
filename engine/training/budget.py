"""``facecast enroll --minutes``: the whole run's budget, planned before the video is prepared.

The preparation (decoding and landmarks on every frame, the checks' speaker embeddings, the A2L calibration's
speech features, the avatar's latents) used to run on the whole video whatever the budget, so a short budget was
overrun several times over. Now its per-frame costs are measured on the video's first frames (``measure_costs``),
and ``plan_preparation`` picks how much of the video (a prefix: the calibration and the checks only need enough
frames to measure a spread, and a prefix keeps the landmark tracking and the crop smoothing continuous) fits in
the budget, or says up front which budget the minimum needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..errors import InputError


class BudgetError(InputError):
    """The budget cannot fit even the minimum enrolment of this video on this machine (exit code 2, as bad input)."""


@dataclass(frozen=True)
class StageCosts:
    """Seconds each preparation stage costs on this machine now, measured on the video's first frames."""

    read_frame: float  # per video frame: decoding it and its landmarks (the detector runs on every frame)
    encode_crop: float  # one autoencoder encode of a crop (the avatar's latents; the adapter's clips)
    audio_frame: float  # per video frame of audio: the checks' speaker embeddings and the calibration's features
    write: float  # once: the model loads after the plan, the bundle's frames video and latents, the A2L graph


@dataclass(frozen=True)
class PrepPlan:
    """How much of the video the run prepares, and what that is predicted to cost (seconds)."""

    frames: int  # the video's first ``frames`` are prepared (checks, calibration, adapter)
    video_frames: int  # what the video has (up to ``EnrollConfig.max_seconds``)
    avatar_frames: int
    budget_s: float
    elapsed_s: float  # spent before the plan: start-up and the cost probe
    prepare_s: float  # predicted: landmarks, checks, calibration features, latents
    write_s: float  # predicted: writing the bundle and its A2L graph
    adapter_s: float  # left for the L2V adapter (0 where none is fitted)
    costs: StageCosts

    @property
    def predicted_s(self) -> float:
        """The whole run's predicted wall time, adapter included."""
        return self.elapsed_s + self.prepare_s + self.write_s + self.adapter_s

    def record(self) -> dict:
        """The plan as meta.json's enrolment record keeps it."""
        out = {k: v for k, v in asdict(self).items() if k != "costs"}
        out = {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}
        out["per_frame_s"] = {k: round(v, 4) for k, v in asdict(self.costs).items()}
        out["predicted_s"] = round(self.predicted_s, 1)
        return out

    def describe(self) -> str:
        per_frame = self.prepare_s / max(self.frames, 1)
        used = "all" if self.frames == self.video_frames else f"the first {self.frames / 25:.1f} s"
        return (
            f"preparation: {self.frames} frames ({used} of {self.video_frames / 25:.1f} s) at {per_frame:.3f} s each "
            f"= {self.prepare_s:.0f} s, + {self.elapsed_s:.0f} s spent + {self.write_s:.0f} s writing"
            + (f" + {self.adapter_s:.0f} s for the L2V adapter" if self.adapter_s else "")
            + f" = {self.predicted_s:.0f} s of the {self.budget_s:.0f} s budget"
        )


@dataclass(frozen=True)
class BudgetRule:
    """The planning knobs (``EnrollConfig`` holds them; here so the planner can be tested on its own)."""

    minutes: float
    margin: float  # the plan aims this share under the budget: the prediction's own error then stays inside it
    min_frames: int  # enrolment's least video (``EnrollConfig.min_seconds``)
    avatar_frames: int
    fit_l2v: bool
    l2v_prepare_share: float  # with an adapter: the preparation's share of the budget at most (the adapter: the rest)


def _prepare_cost(costs: StageCosts, frames: int, avatar_frames: int, fit_l2v: bool) -> float:
    """Predicted seconds to prepare the video's first ``frames``: read + landmarks and the audio work per frame,
    and where the model shows L2V's picture, two encodes per frame for the adapter's clips and two (plain and lower
    face masked) per avatar frame for its latents (a model that does not has neither: ``prepare.needs_latents``)."""
    per_frame = costs.read_frame + costs.audio_frame
    if not fit_l2v:
        return frames * per_frame
    return frames * (per_frame + 2 * costs.encode_crop) + 2 * min(avatar_frames, frames) * costs.encode_crop


def plan_preparation(costs: StageCosts, video_frames: int, elapsed_s: float, rule: BudgetRule) -> PrepPlan:
    """The longest prefix of the video whose preparation fits the budget (all of it when it fits), or a
    ``BudgetError`` that says the least budget this video needs on this machine."""
    budget = rule.minutes * 60
    aim = budget * (1 - rule.margin)  # what the plan may spend, adapter included
    prepare_aim = aim * rule.l2v_prepare_share if rule.fit_l2v else aim
    room = prepare_aim - elapsed_s - costs.write

    def cost(n: int) -> float:
        return _prepare_cost(costs, n, rule.avatar_frames, rule.fit_l2v)

    frames = video_frames
    if cost(frames) > room:  # the cost grows with the frames: the largest prefix that fits, by bisection
        lo, hi = 0, video_frames
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cost(mid) <= room else (lo, mid - 1)
        frames = lo
    least = min(rule.min_frames, video_frames)  # a shorter video is refused by the checks, not here
    if frames < least:
        need = (elapsed_s + costs.write + cost(least)) / (1 - rule.margin)
        if rule.fit_l2v:
            need /= rule.l2v_prepare_share
        n_encodes = 2 * least + 2 * min(rule.avatar_frames, least)  # the adapter's clips and the avatar's latents
        encodes = f" + {n_encodes} encodes at {costs.encode_crop:.2f} s" if rule.fit_l2v else ""
        raise BudgetError(
            f"--minutes {rule.minutes:g} is too short for this video on this machine now: the least enrolment "
            f"({least / 25:.0f} s of video) needs {math.ceil(need / 6) / 10:.1f} min ({elapsed_s:.0f} s already "
            f"spent starting, {cost(least):.0f} s to prepare at {costs.read_frame + costs.audio_frame:.3f} s a "
            f"frame{encodes}, "
            f"{costs.write:.0f} s to write). Give --minutes {math.ceil(need / 6) / 10:.1f} or more."
        )
    prepare_s = cost(frames)
    adapter_s = max(0.0, aim - elapsed_s - prepare_s - costs.write) if rule.fit_l2v else 0.0
    return PrepPlan(
        frames=frames,
        video_frames=video_frames,
        avatar_frames=min(rule.avatar_frames, frames),
        budget_s=budget,
        elapsed_s=elapsed_s,
        prepare_s=prepare_s,
        write_s=costs.write,
        adapter_s=adapter_s,
        costs=costs,
    )


def time_per_item(run: Callable[[], object], items: int, clock: Callable[[], float]) -> float:
    """Seconds per item of one ``run()`` over ``items`` items."""
    t = clock()
    run()
    return (clock() - t) / max(items, 1)


def budget_record(planned: dict, stages: dict[str, float], total_s: float) -> dict:
    """meta.json's ``budget`` record: the plan (``PrepPlan.record``), what each stage took, and how the run ended
    against its budget (finishing under it is said, with why, when there was nothing more to fit)."""
    budget, left = planned["budget_s"], planned["budget_s"] - total_s
    if left < 0:
        verdict = f"over the budget by {-left:.0f} s ({total_s / budget - 1:.0%})"
    elif planned["frames"] == planned["video_frames"] and not planned["adapter_s"]:
        verdict = f"{left:.0f} s under the budget: the whole video was prepared and there is nothing more to fit"
    else:
        verdict = f"{left:.0f} s under the budget"
    return {
        "planned": planned,
        "actual_s": {k: round(v, 1) for k, v in stages.items()},
        "total_s": round(total_s, 1),
        "verdict": verdict,
    }
