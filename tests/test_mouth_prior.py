"""The mouth prior: a still mouth moved to a talking mean for A2L, lips that never cross, the interior atlas."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from conftest import dark_prior, opened, opening_offset, speech_like

from facecast.engine import crop, warp
from facecast.engine.config import FaceConfig, InferenceConfig, L2VConfig
from facecast.engine.errors import FacecastError, WeightsError
from facecast.engine.evaluation.portrait import render_fidelity
from facecast.engine.generate import run_session
from facecast.engine.landmarks import DRIVEN, INNER_LIP, INNER_LIP_PAIRS, interocular, lip_gap, mouth_opening
from facecast.engine.mouth_prior import (
    LUMA,
    MOUTH_PRIOR_FILE,
    load_mouth_prior,
    roll_onto,
    uncross_lips,
    unroll,
)
from facecast.engine.pipeline import LipSyncSession
from facecast.engine.training.dataset import Clip
from facecast.engine.training.train_mouth import MouthTrainConfig, build_prior, fill_deep_rows, medoid


def test_unroll_then_roll_onto_gives_back_the_pixels_between_the_lips(portrait):
    lms = opened(portrait.landmarks[0], 14.0)
    ys, xs = np.mgrid[0:256, 0:256]
    image = np.stack([xs, ys, (xs + ys) // 2], -1).astype(np.uint8)  # a smooth ramp: any misplacement shows
    depth_px = float(lip_gap(lms))  # each half reaches past the middle of the opening, where the other takes over
    texture = unroll(image, lms, rows=20, cols=64, depth_px=depth_px)
    middle = texture[:, :, 32]  # the column at the middle of the mouth: sampled near each lip, not past the middle
    assert not np.isnan(middle[:, 0]).any() and np.isnan(middle[:, -1]).all()
    box = (slice(0, 256), slice(0, 256))
    back = roll_onto(np.nan_to_num(texture), lms, box, 256, depth_px)
    inside = cv2.erode(warp.interior_mask(lms, 256, 0, 0.0), np.ones((3, 3), np.uint8)) > 0.5
    assert inside.sum() > 100
    error = np.abs(back[inside] - image[inside].astype(np.float32)).max(-1)
    # A few pixels in the corners, where a column's grid cell spans lips only pixels apart, were never sampled.
    assert np.percentile(error, 90) < 2.0


def test_a_still_mouth_gets_the_talking_offset_and_a_talking_video_none(portrait):
    still = portrait.landmarks[0].astype(np.float32)
    base = float(mouth_opening(still))
    prior = dataclasses.replace(dark_prior(opening_offset(still, 0.1)), rest_opening=base, mean_opening=base + 0.1)
    moved = prior.talking_reference(still, still[None])  # a portrait at rest: the whole offset
    assert float(mouth_opening(moved)) == pytest.approx(base + 0.1, abs=0.01)
    assert np.array_equal(np.delete(moved, DRIVEN, 0), np.delete(still, DRIVEN, 0))  # eyes, nose: untouched
    assert np.allclose(prior.talking_reference(moved, moved[None]), moved, atol=0.05)  # open as a talking mean
    # A talking video: its mean reference is what A2L displaces in training: left as it is.
    frames = np.stack([still, moved, opened(moved, 5.0), still])
    assert np.array_equal(prior.talking_reference(still, frames), still)
    idle = np.stack([still, still, opened(still, 0.3)])  # an idle video, mouth shut: gets the offset
    assert float(mouth_opening(prior.talking_reference(still, idle))) > base + 0.09


def test_crossed_lips_close_instead_of_turning_inside_out(portrait):
    lms = opened(portrait.landmarks[0], 10.0)
    crossed = lms.copy()
    crossed[66, 1] = crossed[62, 1] - 4.0  # the lower middle point 4 px above the upper one
    fixed = uncross_lips(crossed)
    assert fixed[66] == pytest.approx(fixed[62])
    assert np.array_equal(fixed[[61, 67, 63, 65]], crossed[[61, 67, 63, 65]])  # the uncrossed pairs stay
    assert np.array_equal(uncross_lips(lms), lms)


def _talking_clip(name: str, portrait, frames: int = 60, seed: int = 0) -> Clip:
    """A synthetic talking clip: the portrait's crop with the mouth opened 0-20 px and a black inside drawn."""
    rng = np.random.default_rng(seed)
    crops, lms = [], []
    for _ in range(frames):
        lm = opened(portrait.landmarks[0], float(rng.uniform(0, 20)))
        img = portrait.crops[0].copy()
        cv2.fillPoly(img, [np.round(lm[INNER_LIP]).astype(np.int32)], (0, 0, 0))
        crops.append(img)
        lms.append(lm)
    return Clip(
        name,
        np.stack(crops),
        np.stack(lms),
        np.zeros(frames * 640, np.float32),
        np.zeros(256, np.float32),
        np.ones(frames, bool),
    )


def test_the_prior_learns_a_dark_inside_and_the_rest_offset_from_talking_clips(portrait):
    clips = [_talking_clip(f"c{i}", portrait, seed=i) for i in range(3)]
    tcfg = MouthTrainConfig(rows=8, cols=16, frame_stride=1)
    prior = build_prior(clips, tcfg, FaceConfig(), L2VConfig())
    assert prior.textures.shape == (1, 2, 8, 16, 3)  # one real mouth, the medoid of the widest quarter
    assert prior.counts[0] >= 10 and prior.openings[0] > 0.1
    assert not np.isnan(prior.textures).any()  # rows that mouth does not reach fade into the cavity colour
    assert float(prior.textures[:, :, 1:, 4:-4].mean()) < 0.1  # the black inside, in units of the skin's level
    assert prior.skin @ LUMA == pytest.approx(1.0, abs=0.01)  # the faces' colour relative to their own luma (median)
    assert prior.rest_opening < prior.mean_opening  # the mean of a talking clip is more open than its rest
    offset_px = prior.rest_offset * float(interocular(portrait.landmarks[0]))
    assert offset_px[list(DRIVEN).index(66), 1] > 3.0  # the lower lip's middle sits lower in the talking mean


def test_the_atlas_is_the_most_typical_real_mouth_and_fades_into_the_cavity():
    rng = np.random.default_rng(0)
    typical = rng.uniform(0.2, 1.0, (2, 4, 6, 3)).astype(np.float32)
    mouths = np.stack([typical + rng.normal(0, s, typical.shape) for s in (0.3, 0.02, 0.3, 0.25)]).astype(np.float32)
    assert medoid(mouths) == 1
    shallow = mouths.copy()
    shallow[1, :, 1:] = np.nan  # as typical where it shows, but it shows one row only: a mouth with more wins
    assert medoid(shallow) != 1
    cavity = np.array([0.3, 0.1, 0.1], np.float32)
    filled = fill_deep_rows(shallow[1], cavity, fade_rows=2)
    assert np.array_equal(filled[:, 0], shallow[1][:, 0])
    assert np.allclose(filled[:, 1], (shallow[1][:, 0] + cavity) / 2) and np.allclose(filled[:, 2:], cavity)


def test_too_few_open_mouths_is_an_error_that_says_what_to_add(portrait):
    clip = _talking_clip("short", portrait, frames=5)
    with pytest.raises(FacecastError, match="add talking clips"):
        build_prior([clip], MouthTrainConfig(rows=8, cols=16), FaceConfig(), L2VConfig())


def test_the_prior_saves_and_loads_and_a_damaged_file_says_what_to_do(portrait, tmp_path):
    prior = dark_prior(opening_offset(portrait.landmarks[0], 0.1))
    prior.save(tmp_path / MOUTH_PRIOR_FILE)
    back = load_mouth_prior(tmp_path)
    assert back is not None and np.allclose(back.rest_offset, prior.rest_offset)
    assert np.allclose(back.textures, prior.textures, atol=1e-3)
    assert load_mouth_prior(tmp_path / "nowhere") is None
    (tmp_path / MOUTH_PRIOR_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="facecast train mouth"):
        load_mouth_prior(tmp_path)


@pytest.fixture(scope="module")
def closed_portrait(portrait):
    """The bundled portrait as if its mouth were shut: its lower inner lip laid on the upper (the pixels stay)."""
    lms = portrait.landmarks.copy()
    for upper, lower in INNER_LIP_PAIRS:
        lms[:, lower] = lms[:, upper]
    return dataclasses.replace(portrait, landmarks=lms, reference=lms[0].copy())


def test_a_grey_photo_gets_a_grey_mouth_and_a_colour_photo_the_atlas_colours(portrait):
    lms = opened(portrait.landmarks[0], 14.0)
    prior = dataclasses.replace(
        dark_prior(np.zeros((len(DRIVEN), 2), np.float32)), textures=np.full((2, 2, 8, 16, 3), [0.9, 0.4, 0.4])
    )
    box = (slice(100, 220), slice(60, 200))
    grey = prior.render_interior(lms, np.array([150.0, 150.0, 150.0]), box, 256).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 2]).max() <= 1
    colour = prior.render_interior(lms, np.array([180.0, 135.0, 120.0]), box, 256).astype(int)
    assert (colour[..., 0] - colour[..., 2]).min() > 30  # the atlas's red survives on a face with colour


def test_a_closed_portrait_opens_dark_and_its_lips_never_cross(backend, backend_with_prior, closed_portrait):
    portrait = closed_portrait
    still = portrait.landmarks[0]
    audio = speech_like(2.0)

    def run(b):
        frames = []
        session = LipSyncSession(b, b.cfg, portrait, np.ones(256, np.float32) / 16, InferenceConfig(steps=1))
        run_session(session, audio, frames.append)
        return frames

    with_prior = run(backend_with_prior)
    for f in with_prior:
        lms = f.landmarks
        for upper, lower in INNER_LIP_PAIRS:
            assert lms[lower, 1] >= lms[upper, 1] - 1e-3, "a lower inner lip above its upper one"
    widest = max(with_prior, key=lambda f: float(lip_gap(f.landmarks)))
    assert float(lip_gap(widest.landmarks)) > float(lip_gap(still)) + 4.0  # the talking offset opens it
    inside = cv2.erode(warp.interior_mask(widest.landmarks, 256, 0, 0.0), np.ones((3, 3), np.uint8)) > 0.5
    skin = crop.skin_around_mouth(crop.paste_mask(widest.landmarks), widest.landmarks)
    level = float(portrait.crops[0][skin].astype(np.float32).mean(0) @ LUMA)
    assert float(widest.crop[inside].astype(np.float32).mean(0) @ LUMA) < 0.3 * level  # the atlas's dark inside
    # Without a prior (a model trained before it) the session is what it was: the avatar's own reference.
    without = run(backend)
    assert len(without) == len(with_prior)
    assert backend.mouth_prior is None


def test_render_fidelity_is_the_slope_and_correlation_of_rendered_on_driving():
    rng = np.random.default_rng(0)
    driving = rng.uniform(0.0, 0.15, 200)
    slope, corr = render_fidelity(driving, 0.5 * driving + 0.01)
    assert slope == pytest.approx(0.5) and corr == pytest.approx(1.0)
    rendered = np.full(200, 0.01)  # a mouth that never opens, whatever A2L asks
    rendered[::7] = np.nan  # frames where the detector found no face are left out
    assert render_fidelity(driving, rendered + 1e-4 * rng.standard_normal(200))[0] == pytest.approx(0.0, abs=0.01)


def test_the_portrait_protocol_scores_stills_driven_by_another_clips_speech(backend_with_prior, tmp_path):
    from conftest import moving_face_video

    from facecast.engine.evaluation.portrait import PortraitConfig, evaluate_portraits

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b"):
        moving_face_video(clips / f"{name}.mp4", frames=16)
    b = backend_with_prior
    # The bundled face smiles (open mouth): accept it here so the protocol's path runs end to end.
    report = evaluate_portraits(
        clips,
        None,
        b,
        steps=1,
        max_frames=16,
        pcfg=PortraitConfig(closed_opening=1.0),
        mouth_png=tmp_path / "mouths.png",
    )
    assert set(report["avatars"]) == {"a_first_frame", "b_first_frame"}
    assert report["avatars"]["a_first_frame"]["speech"] == "b.mp4"  # never its own speech
    for key in ("render_slope", "render_corr", "opening_std", "real_opening_std", "detail_ratio"):
        assert key in report["mean"]
    assert (tmp_path / "mouths.png").is_file()
    strict = PortraitConfig()  # at the default threshold the smiling stills are refused, and say why
    with pytest.raises(FacecastError, match="mouth open in the still"):
        evaluate_portraits(clips, None, b, steps=1, max_frames=16, pcfg=strict)


def test_the_prior_travels_with_the_export_and_onnxruntime_paints_with_it(backend_with_prior, portrait, tmp_path):
    from facecast.export.backends.onnxruntime_backend import OnnxRuntimeBackend
    from facecast.export.onnx.export import ExportOptions, export_model

    export_model(
        backend_with_prior.model_dir,
        tmp_path,
        options=ExportOptions(threads=1, slim=False),
        log=lambda s: None,
        dynamic_batch=False,
    )
    assert (tmp_path / MOUTH_PRIOR_FILE).is_file()
    ort = OnnxRuntimeBackend(tmp_path, threads=1)
    assert ort.mouth_prior is not None
    assert np.array_equal(ort.mouth_prior.textures, backend_with_prior.mouth_prior.textures)
    # the warp and the prior draw every frame: the UNet's and the decoder's sessions are never even made
    session = LipSyncSession(ort, ort.cfg, portrait, np.zeros(256, np.float32), InferenceConfig(steps=1))
    frames = session.push_audio(speech_like(0.6)) + session.finish()
    assert frames and not session.runs_l2v
    assert "a2l_step" in ort.loaded_graphs and not {"denoise", "decode"} & set(ort.loaded_graphs)


def test_a_session_whose_picture_l2v_never_shows_skips_l2v_and_shows_the_same_frames(backend_with_prior, portrait):
    """With the warp and the atlas, L2V's picture is shown nowhere: the session asks for no L2V call, and its frames
    are the very frames of a session that runs L2V and throws its picture away."""
    from facecast.engine.batching import A2LCall, FrameJob, answer

    b = backend_with_prior
    audio = speech_like(1.2)

    def run(force_l2v: bool) -> tuple[list, list[type]]:
        session = LipSyncSession(b, b.cfg, portrait, np.ones(256, np.float32) / 16, InferenceConfig(steps=1))
        session.runs_l2v = session.runs_l2v or force_l2v
        asked: list[type] = []
        frames = []
        for gen in (session.push_audio_steps(audio), session.finish_steps()):
            try:
                request = next(gen)
                while True:
                    asked.append(type(request))
                    request = gen.send(answer(b, [request])[0])
            except StopIteration as stop:
                frames += stop.value
        return frames, asked

    skipped, asked = run(force_l2v=False)
    assert skipped and FrameJob not in asked and A2LCall in asked
    assert "unet" not in skipped[0].timings_ms and "composite" in skipped[0].timings_ms
    full, asked = run(force_l2v=True)
    assert FrameJob in asked and len(full) == len(skipped)
    for a, c in zip(skipped, full, strict=True):
        assert np.array_equal(a.image, c.image) and np.array_equal(a.landmarks, c.landmarks)
    with_l2v = dataclasses.replace(b.cfg, face=dataclasses.replace(b.cfg.face, interior_source="l2v"))
    assert LipSyncSession(b, with_l2v, portrait, np.zeros(256, np.float32)).runs_l2v


def test_torch_on_the_cpu_runs_one_thread_for_a_model_whose_sessions_run_no_l2v(backend_with_prior, tiny_model):
    """What is left per frame without L2V is small, and torch's threads spun against other processes (generate
    7 -> 35 frames/s on a busy machine with one): ``load_backend`` picks one thread for such a model, leaves torch's
    default for a model that shows L2V, and takes an explicit ``threads`` as given."""
    import torch

    from facecast.export.backends import TORCH_THREADS_WITHOUT_L2V, load_backend

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        load_backend("torch", tiny_model)  # no prior: its sessions show L2V's picture
        assert torch.get_num_threads() == 2
        load_backend("torch", backend_with_prior.model_dir)
        assert torch.get_num_threads() == TORCH_THREADS_WITHOUT_L2V == 1
        load_backend("torch", backend_with_prior.model_dir, threads=3)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
