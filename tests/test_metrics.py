"""Hand-made cases for the eval metric layer: metrics.py, syncnet.py and perceptual.py (random weights)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from facecast.engine.errors import DependencyError, FaceError, InputError, WeightsError
from facecast.engine.evaluation import metrics as M
from facecast.engine.evaluation import perceptual as P
from facecast.engine.evaluation import syncnet as S


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The machine is shared with training jobs; these tests are small enough for one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _face_landmarks(n_frames: int = 4, iod_px: float = 100.0) -> np.ndarray:
    """Synthetic (T, 68, 2) landmarks with outer eye corners iod_px apart and varied other points."""
    rng = np.random.default_rng(1)
    lm = rng.uniform(50, 250, size=(n_frames, 68, 2)).astype(np.float32)
    lm[:, M.LEFT_EYE_OUTER] = (100.0, 120.0)
    lm[:, M.RIGHT_EYE_OUTER] = (100.0 + iod_px, 120.0)
    return lm


# ---------------------------------------------------------------------------------------------------------
# Image fidelity


def test_identical_frames_psnr_inf_clip_capped_and_ssim_one():
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    assert np.all(np.isinf(M.psnr(frames, frames)))
    assert M.clip_psnr(frames, frames) == M.PSNR_CAP_DB
    np.testing.assert_allclose(M.ssim(frames, frames), 1.0)
    assert M.clip_ssim(frames, frames) == pytest.approx(1.0)


def test_psnr_of_known_noise_level():
    real = np.full((2, 16, 16, 3), 100, dtype=np.uint8)
    noise = np.where(np.indices((16, 16)).sum(axis=0) % 2 == 0, 10, -10)[None, :, :, None]
    fake = (real.astype(int) + noise).astype(np.uint8)  # |error| = 10 everywhere -> MSE 100
    expected = 10 * math.log10(255**2 / 100)
    np.testing.assert_allclose(M.psnr(real, fake), expected)
    assert M.clip_psnr(real, fake) == pytest.approx(expected)
    # A single HWC image is a one-frame stack.
    assert M.psnr(real[0], fake[0]).shape == (1,)
    assert 0.0 < M.clip_ssim(real, fake) < 1.0


def test_image_metrics_reject_mismatched_or_float_input():
    a = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(InputError, match="differ in shape"):
        M.psnr(a, a[:1])
    with pytest.raises(InputError, match="uint8"):
        M.ssim(a.astype(np.float32), a)


def _checkerboard(square_px: int = 4, side_px: int = 48) -> np.ndarray:
    """(side, side, 3) uint8 black/white checkerboard: every square edge is a sharp step."""
    cells = (np.indices((side_px, side_px)) // square_px).sum(axis=0) % 2
    return np.repeat((cells * 255).astype(np.uint8)[..., None], 3, axis=2)


def test_laplacian_variance_sharp_beats_blurred_and_flat_is_zero():
    sharp = _checkerboard()
    blurred = cv2.GaussianBlur(sharp, (0, 0), sigmaX=2.0)
    scores = M.laplacian_variance(np.stack([sharp, blurred]))
    assert scores.shape == (2,)
    assert scores[1] < 0.5 * scores[0]  # blurring a 4 px checkerboard with sigma 2 flattens most of its edges
    assert M.laplacian_variance(np.full((8, 8, 3), 128, np.uint8)).tolist() == [0.0]
    # One channel works too and scores like the RGB copy (the grey of a grey image is itself).
    np.testing.assert_allclose(M.laplacian_variance(sharp[None, ..., :1]), scores[:1])


def test_laplacian_variance_rejects_bad_input():
    with pytest.raises(InputError, match="uint8"):
        M.laplacian_variance(_checkerboard().astype(np.float32))
    with pytest.raises(InputError, match="at least 3x3"):
        M.laplacian_variance(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(InputError, match="channels"):
        M.laplacian_variance(np.zeros((1, 8, 8, 4), np.uint8))


# ---------------------------------------------------------------------------------------------------------
# Geometry


def test_landmark_distance_of_translated_copy_is_shift_over_interocular():
    real = _face_landmarks(iod_px=100.0)
    pred = real + np.array([3.0, 4.0], np.float32)  # 5 px everywhere
    np.testing.assert_allclose(M.landmark_distance(pred, real), 0.05, rtol=1e-6)
    np.testing.assert_allclose(M.landmark_distance(pred, real, M.MOUTH), 0.05, rtol=1e-6)
    assert M.landmark_distance(real, real).tolist() == [0.0] * 4
    assert M.MOUTH.tolist() == list(range(48, 68)) and M.FACE.tolist() == list(range(68))


def test_landmark_distance_only_counts_selected_points():
    real = _face_landmarks()
    pred = real.copy()
    pred[:, 48:68] += np.array([6.0, 8.0], np.float32)  # only the mouth moves, 10 px
    np.testing.assert_allclose(M.landmark_distance(pred, real, M.MOUTH), 0.1, rtol=1e-6)
    np.testing.assert_allclose(M.landmark_distance(pred, real), 0.1 * 20 / 68, rtol=1e-6)


def test_degenerate_landmarks_raise_face_error():
    real = _face_landmarks()
    real[2, M.RIGHT_EYE_OUTER] = real[2, M.LEFT_EYE_OUTER]
    with pytest.raises(FaceError, match="interocular"):
        M.landmark_distance(real, real)


# ---------------------------------------------------------------------------------------------------------
# Temporal coherence


def test_temporal_pixel_mse_constant_and_alternating():
    still = np.full((5, 8, 8, 3), 77, np.uint8)
    assert M.temporal_pixel_mse(still) == 0.0
    alternating = np.zeros((5, 8, 8, 3), np.uint8)
    alternating[1::2] = 51  # 0.2 on the [0, 1] scale -> every consecutive pair differs by 0.2
    assert M.temporal_pixel_mse(alternating) == pytest.approx(0.04, rel=1e-6)
    assert M.temporal_gap(alternating, still) == pytest.approx(0.04, rel=1e-6)
    assert M.temporal_gap(still, still) == 0.0
    with pytest.raises(InputError, match="at least 2 frames"):
        M.temporal_pixel_mse(still[:1])


# ---------------------------------------------------------------------------------------------------------
# Offline lip sync


def test_mouth_opening_in_interocular_units():
    lm = _face_landmarks(n_frames=2, iod_px=100.0)
    for upper, lower in M.INNER_LIP_PAIRS:
        lm[:, lower] = lm[:, upper] + np.array([0.0, 10.0], np.float32)
    lm[1, 66] = lm[1, 62] + np.array([0.0, 40.0], np.float32)  # gaps 10, 40, 10 -> mean 20 px
    np.testing.assert_allclose(M.mouth_opening(lm), [0.1, 0.2], rtol=1e-6)


def _talking_landmarks(amplitude_px: float, n_frames: int = 50, iod_px: float = 100.0) -> np.ndarray:
    """Landmarks whose inner lips open 10 + amplitude * sin(t) px (all three pairs alike), eyes iod_px apart."""
    lm = _face_landmarks(n_frames=n_frames, iod_px=iod_px)
    gap_px = 10.0 + amplitude_px * np.sin(np.linspace(0, 6 * np.pi, n_frames))
    for upper, lower in M.INNER_LIP_PAIRS:
        lm[:, lower] = lm[:, upper] + np.stack([np.zeros(n_frames), gap_px], axis=1)
    return lm


def test_motion_ratio_of_half_the_opening_amplitude_is_half():
    real = _talking_landmarks(amplitude_px=8.0)
    fake = _talking_landmarks(amplitude_px=4.0)
    sine_std = np.sin(np.linspace(0, 6 * np.pi, 50)).std()
    assert M.opening_std(real) == pytest.approx(8.0 * sine_std / 100.0, rel=1e-5)  # interocular units
    assert M.motion_ratio(fake, real) == pytest.approx(0.5, rel=1e-5)
    assert M.motion_ratio(real, fake) == pytest.approx(2.0, rel=1e-5)
    assert M.motion_ratio(real, real) == pytest.approx(1.0)


def test_motion_ratio_against_a_still_real_mouth_is_nan_and_left_out_of_means():
    still = _talking_landmarks(amplitude_px=0.0)
    assert M.opening_std(still) == pytest.approx(0.0, abs=1e-6)  # float32 landmarks: round-off only
    assert math.isnan(M.motion_ratio(_talking_landmarks(amplitude_px=4.0), still))
    # Detector-noise-sized motion (std ~0.0007 interocular, below STILL_MOUTH_OPENING_STD) counts as still too.
    assert math.isnan(M.motion_ratio(still, _talking_landmarks(amplitude_px=0.1)))
    assert M.summarize([{"motion_ratio": math.nan}, {"motion_ratio": 0.8}]) == {"motion_ratio": 0.8, "n_clips": 2.0}
    with pytest.raises(InputError, match="at least 2 frames"):
        M.opening_std(still[:1])


def test_audio_envelope_is_rms_per_video_frame():
    audio = np.concatenate([np.full(640, 0.5), np.full(640, -0.25), np.zeros(100)]).astype(np.float32)
    np.testing.assert_allclose(M.audio_envelope(audio, 3), [0.5, 0.25, 0.0])  # last frame padded with silence
    with pytest.raises(InputError, match="mono"):
        M.audio_envelope(np.zeros((2, 640)), 1)


@pytest.mark.parametrize("lag", [3, -2])
def test_sync_correlation_recovers_injected_offset_with_sign(lag: int):
    rng = np.random.default_rng(lag + 10)
    envelope = rng.uniform(0, 1, size=80)
    opening = np.roll(envelope, lag)  # opening[t] = envelope[t - lag]: mouth lags audio by `lag` frames
    corr0, offset, best = M.sync_correlation(opening, envelope, max_offset_frames=5)
    assert offset == lag
    assert best == pytest.approx(1.0)
    assert corr0 < 0.5


def test_sync_correlation_of_constant_input_is_zero_not_nan():
    result = M.sync_correlation(np.full(30, 0.3), np.random.default_rng(0).uniform(size=30))
    assert result == (0.0, 0, 0.0)
    assert M.pearson(np.ones(5), np.ones(5)) == 0.0


def test_summarize_means_skip_missing_and_nonfinite():
    out = M.summarize(
        [
            {"clip": "a", "psnr": 30.0, "lse_c": 7.0},
            {"clip": "b", "psnr": 20.0, "lse_c": float("nan")},
            {"clip": "c", "psnr": 25.0},
        ]
    )
    assert out == {"psnr": 25.0, "lse_c": 7.0, "n_clips": 3.0}


# ---------------------------------------------------------------------------------------------------------
# Mouth contact sheet (engine/evaluation/evaluate.py; imported in the tests so an import problem there fails only these)


def test_mouth_sheet_png_size_and_real_row_first(tmp_path: Path):
    from facecast.engine.evaluation import evaluate as E

    real = np.full((10, E.MOUTH_BOX_PX, E.MOUTH_BOX_PX, 3), 10, np.uint8)
    model = np.full_like(real, 200)
    path = E.mouth_sheet([("real", real), ("model", model)], tmp_path / "sub" / "mouths.png", frames=4)
    sheet = cv2.imread(str(path))
    tile_px = 3 * E.MOUTH_BOX_PX  # 288
    assert sheet.shape == (2 * tile_px, E.MOUTH_LABEL_PX + 4 * tile_px, 3)
    assert sheet[tile_px // 2, E.MOUTH_LABEL_PX + 5].tolist() == [10, 10, 10]  # first row: real
    assert sheet[tile_px + tile_px // 2, -5].tolist() == [200, 200, 200]  # second row: model
    # Enlargement is nearest-neighbour: one source pixel -> a 3x3 block, no interpolation blur.
    dot = real.copy()
    dot[:, 0, 0] = 255
    sheet = cv2.imread(str(E.mouth_sheet([("generated", dot)], tmp_path / "dot.png", frames=1)))
    assert sheet.shape == (tile_px, E.MOUTH_LABEL_PX + tile_px, 3)
    tile = sheet[:, E.MOUTH_LABEL_PX :, 0]
    assert (tile[:3, :3] == 255).all() and tile[3, 0] == 10 and tile[0, 3] == 10


def test_eval_mouth_sheet_one_block_per_clip(tmp_path: Path):
    from facecast.engine.evaluation import evaluate as E

    mouths = {s: np.zeros((6, E.MOUTH_BOX_PX, E.MOUTH_BOX_PX, 3), np.uint8) for s in ("real", "model", "static")}
    path = E.eval_mouth_sheet([("clip_a", mouths), ("clip_b", mouths)], tmp_path / "m.png", frames=3)
    tile_px = 3 * E.MOUTH_BOX_PX
    assert cv2.imread(str(path)).shape == (2 * (3 * tile_px + E.SHEET_GAP_PX), E.MOUTH_LABEL_PX + 3 * tile_px, 3)


def test_mouth_sheet_rejects_bad_rows(tmp_path: Path):
    from facecast.engine.evaluation import evaluate as E

    ok = np.zeros((4, 96, 96, 3), np.uint8)
    with pytest.raises(InputError, match="crop size"):
        E.mouth_sheet([("real", ok), ("model", ok[:, :64, :64])], tmp_path / "x.png")
    with pytest.raises(InputError, match="uint8"):
        E.mouth_sheet([("model", ok.astype(np.float32))], tmp_path / "x.png")
    with pytest.raises(InputError, match="at least one"):
        E.mouth_sheet([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------------------
# SyncNet


@pytest.fixture(scope="module")
def scorer() -> S.SyncNetScorer:
    return S.SyncNetScorer.random_init(seed=0)


def _clip(n_frames: int, n_samples: int | None = None, px: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n_frames)
    frames = rng.integers(0, 256, size=(n_frames, px, px, 3), dtype=np.uint8)
    n_samples = n_frames * S.SAMPLES_PER_FRAME if n_samples is None else n_samples
    return frames, (0.1 * rng.standard_normal(n_samples)).astype(np.float32)


def test_syncnet_branch_output_shapes(scorer: S.SyncNetScorer):
    with torch.no_grad():
        assert scorer.net.forward_audio(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
        assert scorer.net.forward_video(torch.zeros(1, 3, 5, 224, 224)).shape == (1, 1024)


def test_syncnet_score_shapes_windows_and_offset_range(scorer: S.SyncNetScorer):
    frames, audio = _clip(9)
    out = scorer.score(frames, audio)
    assert out["n_windows"] == 9 - 5  # the original stops one window before the end
    assert len(out["mean_dists"]) == 2 * S.VSHIFT + 1 == 31
    assert -15 <= out["offset_frames"] <= 15
    assert math.isfinite(out["lse_d"]) and out["lse_c"] >= 0.0
    assert out["lse_d"] == pytest.approx(min(out["mean_dists"]))
    # Shorter audio limits the windows too.
    _, short_audio = _clip(9, n_samples=7 * S.SAMPLES_PER_FRAME)
    vid, aud = scorer.embed(frames, short_audio)
    assert vid.shape == aud.shape == (2, 1024)


def test_syncnet_too_short_input_raises_clear_error(scorer: S.SyncNetScorer):
    frames, audio = _clip(5)
    with pytest.raises(InputError, match="at least 6 frames"):
        scorer.score(frames, audio)


def test_offset_search_recovers_known_shift_with_sign():
    audio_emb = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    video_emb = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    video_emb[3:] = audio_emb[:-3]  # video window i shows audio window i - 3: mouth lags audio by 3
    dists = S.offset_distances(video_emb, audio_emb)
    assert dists.shape == (40, 31)
    scores = S.sync_scores(dists)
    assert scores["offset_frames"] == 3
    assert scores["lse_c"] > 0.0


def test_syncnet_state_dict_round_trip_strict(tmp_path: Path, scorer: S.SyncNetScorer):
    state = scorer.net.state_dict()
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    loaded = S.SyncNetScorer.from_file(path)
    for key, value in loaded.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    # The published file predates BatchNorm's num_batches_tracked buffers; it must still load strictly.
    old_style = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old_style, path)
    S.SyncNetScorer.from_file(path)


def test_syncnet_bad_weights_raise_weights_error(tmp_path: Path):
    with pytest.raises(WeightsError, match="--syncnet-weights"):
        S.SyncNetScorer.from_file(tmp_path / "missing.model")
    wrong = tmp_path / "wrong.model"
    torch.save({"netcnnaud.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(WeightsError, match="does not match"):
        S.SyncNetScorer.from_file(wrong)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not read"):
        S.SyncNetScorer.from_file(garbage)


def test_mfcc_is_python_speech_features_on_16_bit_samples():
    python_speech_features = pytest.importorskip("python_speech_features")
    audio = (0.1 * np.random.default_rng(0).standard_normal(12_345)).astype(np.float32)
    via_package = S.mfcc_16k(audio)
    pcm = np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767)  # as syncnet_python reads wav files
    np.testing.assert_allclose(python_speech_features.mfcc(pcm, 16_000), via_package, rtol=1e-9, atol=1e-9)
    assert via_package.shape == (1 + math.ceil((12_345 - 400) / 160), 13)


def test_mfcc_without_python_speech_features_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "python_speech_features", None)  # import fails as if not installed
    with pytest.raises(DependencyError, match=r"facecast\[eval\]"):
        S.mfcc_16k(np.zeros(16_000, np.float32))


# ---------------------------------------------------------------------------------------------------------
# LPIPS / tLP


def _save_lpips_files(tmp_path: Path, lpips: P.LPIPS) -> tuple[Path, Path]:
    state = lpips.net.state_dict()
    backbone = {k: v for k, v in state.items() if k.startswith("features.")}
    backbone["classifier.1.weight"] = torch.zeros(4, 4)  # torchvision files carry a classifier LPIPS ignores
    linear = {k: v for k, v in state.items() if k.startswith("lin")}
    assert sorted(linear) == [f"lin{i}.model.1.weight" for i in range(5)]
    torch.save(backbone, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(linear, tmp_path / "alex.pth")
    return tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth"


def test_lpips_from_files_identical_zero_different_positive(tmp_path: Path):
    reference = P.LPIPS.random_init(seed=0)
    lpips = P.LPIPS.from_files(*_save_lpips_files(tmp_path, reference))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(3, 48, 48, 3), dtype=np.uint8)
    b = rng.integers(0, 256, size=(3, 48, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(lpips(a, a), 0.0)
    d = lpips(a, b)
    assert d.shape == (3,) and np.all(d > 0)
    np.testing.assert_allclose(d, reference(a, b), rtol=1e-5)

    video = np.concatenate([a, b])
    assert P.temporal_lpips(lpips, video).shape == (5,)
    assert P.tlp(lpips, video, video) == 0.0
    assert P.tlp(lpips, video, np.repeat(a[:1], 6, axis=0)) > 0.0


def test_lpips_missing_or_wrong_files_raise_weights_error(tmp_path: Path):
    backbone, linear = _save_lpips_files(tmp_path, P.LPIPS.random_init())
    with pytest.raises(WeightsError, match="--lpips-backbone"):
        P.LPIPS.from_files(tmp_path / "nope.pth", linear)
    with pytest.raises(WeightsError, match="does not match"):
        P.LPIPS.from_files(backbone, backbone)  # backbone file where the heads belong


# ---------------------------------------------------------------------------------------------------------
# FID


def test_frechet_distance_identical_and_shifted_means():
    rng = np.random.default_rng(0)
    mu, sigma = P.gaussian_stats(rng.standard_normal((200, 6)))
    assert P.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    shift = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 0.0])
    assert P.frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(float(shift @ shift), rel=1e-6)


class _MeanColour(nn.Module):
    """Stand-in for the Inception TorchScript: same call convention, 3-d features (mean colour)."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore:.*jit.*:DeprecationWarning")  # the stand-in must be TorchScript too
def test_fid_from_torchscript(tmp_path: Path):
    path = tmp_path / "inception.pt"
    torch.jit.script(_MeanColour()).save(str(path))
    fid = P.FrechetDistance.from_torchscript(path)
    frames = np.random.default_rng(0).integers(50, 200, size=(6, 8, 8, 3), dtype=np.uint8)
    assert fid.features(frames).shape == (6, 3)
    assert fid(frames, frames) == pytest.approx(0.0, abs=1e-6)
    assert fid(frames, frames + np.uint8(10)) == pytest.approx(3 * 10.0**2, rel=1e-6)
    with pytest.raises(WeightsError, match="--fid-inception"):
        P.FrechetDistance.from_torchscript(tmp_path / "missing.pt")


def test_crop_faces_frames_face_like_syncnet_python():
    frames = np.zeros((3, 200, 300, 3), np.uint8)
    frames[:, 80:120, 130:170] = 255  # the "face": a white 40x40 box
    boxes = np.tile([130.0, 80.0, 170.0, 120.0], (3, 1))
    crops = S.crop_faces(frames, boxes)
    assert crops.shape == (3, 224, 224, 3) and crops.dtype == np.uint8
    # Half-size s = 20: the 56 px crop spans x 122..178, y 80..136; the box fills the top of its middle.
    assert crops[0, 10, 112].tolist() == [255, 255, 255]  # inside the box
    assert crops[0, 200, 112].tolist() == [0, 0, 0]  # below the box, still inside the frame
    with pytest.raises(InputError, match="boxes"):
        S.crop_faces(frames, boxes[:2])
