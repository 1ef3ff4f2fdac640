"""`facecast enroll --minutes` is the whole run's budget: the plan (injected per-frame costs, no timing), the
refusal that names the least budget, and the plan and actual times in the bundle's meta.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import moving_face_video

from facecast.engine.training.budget import (
    BudgetError,
    BudgetRule,
    StageCosts,
    budget_record,
    plan_preparation,
)
from facecast.engine.training.enroll import EnrollConfig, enroll

# Costs of the order measured on edtalk_lieu_60s (Intel Xeon, 2 cores): 10 ms to read a frame and find its face,
# 0.12 s an encode, 10 ms of audio work a frame, 15 s to write.
COSTS = StageCosts(read_frame=0.01, encode_crop=0.12, audio_frame=0.01, write=15.0)


def _rule(minutes: float, fit_l2v: bool = False) -> BudgetRule:
    return BudgetRule(
        minutes=minutes, margin=0.05, min_frames=250, avatar_frames=250, fit_l2v=fit_l2v, l2v_prepare_share=0.5
    )


def test_the_whole_video_is_prepared_when_it_fits_and_the_plan_says_so() -> None:
    plan = plan_preparation(COSTS, video_frames=1500, elapsed_s=10.0, rule=_rule(3))
    assert plan.frames == 1500
    # 1500 frames x 0.02 s = 30 s (a model without L2V encodes nothing: no adapter, no avatar latents),
    # + 10 s spent + 15 s writing
    assert plan.prepare_s == pytest.approx(30.0)
    assert plan.predicted_s == pytest.approx(55.0)
    assert "1500 frames" in plan.describe() and "of the 180 s budget" in plan.describe()


def test_a_short_budget_prepares_the_prefix_that_fits() -> None:
    """Preparing every frame whatever the budget, 6000 frames here would take 145 s of a 120 s budget."""
    plan = plan_preparation(COSTS, video_frames=6000, elapsed_s=10.0, rule=_rule(2))
    assert 250 <= plan.frames < 6000
    assert plan.predicted_s <= 120 * 0.95 + 1e-9  # the plan keeps its margin under the budget
    one_more = plan_preparation(COSTS, video_frames=plan.frames + 1, elapsed_s=10.0, rule=_rule(10))
    assert one_more.predicted_s > 120 * 0.95  # ... and is the longest prefix that does


def test_a_budget_below_the_minimum_is_refused_up_front_with_the_least_budget() -> None:
    with pytest.raises(BudgetError, match=r"--minutes 0.3 is too short.*Give --minutes (\d+\.\d) or more") as e:
        plan_preparation(COSTS, video_frames=1500, elapsed_s=10.0, rule=_rule(0.3))
    least = float(str(e.value).rsplit("--minutes ", 1)[1].split()[0])
    plan_preparation(COSTS, video_frames=1500, elapsed_s=10.0, rule=_rule(least))  # that budget does fit


def test_only_a_model_that_shows_l2v_pays_for_the_avatars_latents() -> None:
    """Its sessions read them; a model without L2V has none encoded (``prepare.needs_latents``)."""
    lean = plan_preparation(COSTS, video_frames=1500, elapsed_s=10.0, rule=_rule(60))
    full = plan_preparation(COSTS, video_frames=1500, elapsed_s=10.0, rule=_rule(60, fit_l2v=True))
    assert lean.frames == full.frames == 1500
    # the adapter's clips: 2 x 0.12 s a frame; the avatar's latents: 500 encodes x 0.12 s
    assert full.prepare_s - lean.prepare_s == pytest.approx(1500 * 0.24 + 500 * 0.12)
    with pytest.raises(BudgetError) as e:
        plan_preparation(COSTS, video_frames=1500, elapsed_s=10.0, rule=_rule(0.3))
    assert "encodes" not in str(e.value)


def test_a_model_with_an_adapter_leaves_the_rest_of_the_budget_to_it() -> None:
    plan = plan_preparation(COSTS, video_frames=1500, elapsed_s=10.0, rule=_rule(14, fit_l2v=True))
    assert plan.prepare_s + plan.elapsed_s + plan.write_s <= 14 * 60 * 0.95 * 0.5
    assert plan.adapter_s > 0
    assert plan.predicted_s == pytest.approx(14 * 60 * 0.95)


def test_the_record_says_why_a_run_ended_under_its_budget() -> None:
    whole = plan_preparation(COSTS, video_frames=1500, elapsed_s=10.0, rule=_rule(14)).record()
    assert "nothing more to fit" in budget_record(whole, {}, 120.0)["verdict"]
    assert budget_record(whole, {}, 900.0)["verdict"].startswith("over the budget by 60 s")


def test_enroll_follows_its_plan_and_records_it(tiny_model: Path, tmp_path: Path) -> None:
    """Injected costs make 83 of a 6 s video's 150 frames fit; the bundle is enrolled on that prefix and meta.json
    keeps the plan and the actual stage times. A clock that never moves keeps the figures deterministic."""
    video = moving_face_video(tmp_path / "person.mp4", frames=150)
    ecfg = EnrollConfig(
        minutes=2.0,
        budget_margin=0.05,
        min_seconds=2.0,
        check_identity=False,
        avatar_frames=25,
        max_steps=2,
        batch=2,
        log_every=1,
    )
    # The tiny model shows L2V's picture, so the preparation gets half of the budget less the margin (57 s), less
    # 2 s to write: 0.6 s a frame (0.3 + 0.1 + two encodes for the adapter's clips) and 50 avatar encodes -> 83.
    costs = StageCosts(read_frame=0.3, encode_crop=0.1, audio_frame=0.1, write=2.0)
    report = enroll(video, tmp_path / "b", tiny_model, ecfg, log=lambda _: None, clock=lambda: 0.0, costs=costs)
    planned = report["budget"]["planned"]
    assert planned["frames"] == 83 and planned["video_frames"] == 150 and planned["adapter_s"] > 0
    assert report["train_frames"] + report["val_frames"] == 83
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())["enrolment"]["budget"]
    assert meta["planned"]["per_frame_s"]["read_frame"] == 0.3
    assert set(meta["actual_s"]) == {"plan", "prepare", "calibrate", "adapter", "write"}


def test_enroll_refuses_a_budget_below_the_minimum_before_writing(tiny_model: Path, tmp_path: Path) -> None:
    video = moving_face_video(tmp_path / "person.mp4", frames=75)
    ecfg = EnrollConfig(min_seconds=2.0, check_identity=False, minutes=0.1)
    costs = StageCosts(read_frame=1.0, encode_crop=1.0, audio_frame=1.0, write=2.0)
    with pytest.raises(BudgetError, match="too short for this video"):
        enroll(video, tmp_path / "b", tiny_model, ecfg, log=lambda _: None, clock=lambda: 0.0, costs=costs)
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_the_probe_times_each_stage_per_frame_with_the_given_clock(tiny_model: Path, tmp_path: Path) -> None:
    """A clock that advances 1 s a reading: each stage is one timed call, so its cost is 1 s over its items."""
    import itertools

    import numpy as np

    from facecast.engine import checkpoint, media
    from facecast.engine.training.enroll import measure_costs

    class NoFaces:  # the probe times the detector; it does not judge what it finds
        def detect(self, image):
            return []

    video = moving_face_video(tmp_path / "person.mp4", frames=40)
    cfg = checkpoint.load_config(tiny_model)
    ecfg = EnrollConfig(probe_frames=20, probe_encodes=4, check_identity=False, calibrate_a2l_motion=False)
    ticks = itertools.count()
    costs = measure_costs(
        video,
        cfg,
        ecfg,
        NoFaces(),
        lambda x: np.zeros((len(x), 4, 4, 4), np.float32),
        None,
        media.load_audio(video, cfg.audio.sample_rate),
        lambda: float(next(ticks)),
    )
    assert costs == StageCosts(read_frame=1 / 20, encode_crop=1 / 4, audio_frame=1 / 20, write=ecfg.write_seconds)
