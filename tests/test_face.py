import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import ASSETS, SHARED_DATA

from facecast.engine import crop, media
from facecast.engine.avatar import face
from facecast.engine.config import FaceConfig, L2VConfig
from facecast.engine.errors import FaceError
from facecast.engine.landmarks import fit_similarity, interocular, invert_affine, render_heatmaps


@pytest.fixture(scope="module")
def backend():
    return face.make_backend("dlib")


@pytest.fixture(scope="module")
def portrait():
    return media.load_image(ASSETS / "astronaut.jpg")


def test_portrait_gives_68_landmarks_on_the_face(backend, portrait):
    lms = face.image_landmarks(portrait, backend, FaceConfig())
    assert lms.shape == (68, 2)
    # Eyes above nose above mouth above chin, as in any upright face.
    assert lms[36:48, 1].mean() < lms[33, 1] < lms[48:68, 1].mean() < lms[8, 1]
    assert 40 < interocular(lms) < 200


def test_crop_puts_the_face_on_the_template(backend, portrait):
    cfg = FaceConfig()
    lms = face.image_landmarks(portrait, backend, cfg)
    m = crop.crop_transform(lms, cfg)
    in_crop = crop.to_crop_coords(lms, m)
    eyes = np.stack([in_crop[36:42].mean(0), in_crop[42:48].mean(0)])
    np.testing.assert_allclose(eyes, [cfg.left_eye_px, cfg.right_eye_px], atol=6)
    assert crop.warp_to_crop(portrait, m, cfg.crop_px).shape == (256, 256, 3)


def test_paste_back_of_an_unchanged_crop_leaves_the_frame_unchanged(backend, portrait):
    cfg = FaceConfig()
    lms = face.image_landmarks(portrait, backend, cfg)
    m = crop.crop_transform(lms, cfg)
    c = crop.warp_to_crop(portrait, m, cfg.crop_px)
    mask = crop.lower_face_mask(crop.to_crop_coords(lms, m))
    out = crop.paste_back(portrait, c, mask, m)
    diff = np.abs(out.astype(int) - portrait.astype(int))
    # Resampling twice blurs a little; nothing else may change, and nothing outside the face at all.
    assert diff.mean() < 1.0
    assert diff[:100].max() == 0


def test_paste_back_changes_only_the_lower_face_and_feathers_the_edge(backend, portrait):
    cfg, l2v = FaceConfig(), L2VConfig()
    lms = face.image_landmarks(portrait, backend, cfg)
    m = crop.crop_transform(lms, cfg)
    lc = crop.to_crop_coords(lms, m)
    mask = crop.lower_face_mask(lc)
    assert mask[: l2v.mask_top_px].max() == 0  # the clean upper face is never touched
    assert mask[int(lc[62, 1]), int(lc[62, 0])] > 0.99  # the mouth is fully replaced
    assert 0 < np.count_nonzero((mask > 0.05) & (mask < 0.95))  # a soft edge, not a hard seam
    white = np.full((256, 256, 3), 255, np.uint8)
    out = crop.paste_back(portrait, white, mask, m)
    inv = invert_affine(m)
    mouth = (lc[62] @ inv[:, :2].T + inv[:, 2]).astype(int)
    eye = lms[37].astype(int)
    assert out[mouth[1], mouth[0]].min() > 240
    assert np.array_equal(out[eye[1], eye[0]], portrait[eye[1], eye[0]])


def test_no_face_is_a_clear_error(backend):
    blank = np.full((300, 300, 3), 128, np.uint8)
    with pytest.raises(FaceError, match="no face found"):
        face.image_landmarks(blank, backend, FaceConfig(), "blank.png")


def test_tiny_face_is_refused(backend, portrait):
    import cv2

    small = cv2.resize(portrait, (96, 96), interpolation=cv2.INTER_AREA)
    canvas = np.full((400, 400, 3), 200, np.uint8)
    canvas[150:246, 150:246] = small
    with pytest.raises(FaceError, match="(too small|no face)"):
        face.image_landmarks(canvas, backend, FaceConfig(), "tiny.png")


def test_video_tracking_follows_a_moving_face(backend, portrait):
    import cv2

    frames = [cv2.warpAffine(portrait, np.float32([[1, 0, dx], [0, 1, 0]]), (512, 512)) for dx in range(0, 30, 3)]
    lms, found = face.video_landmarks(frames, backend, FaceConfig())
    assert found.all()
    shift = lms[:, 30, 0] - lms[0, 30, 0]
    np.testing.assert_allclose(shift, np.arange(0, 30, 3), atol=3)


def test_smoothing_removes_jitter_and_keeps_the_mean():
    rng = np.random.default_rng(0)
    base = np.tile(np.array([[1.0, 0, 10], [0, 1.0, 20]]), (50, 1, 1))
    noisy = base + rng.normal(0, 1, base.shape) * np.array([0, 0, 1])
    smooth = crop.smooth_transforms(noisy, 9)
    assert (np.std(smooth[:, :, 2], axis=0) < 0.5 * np.std(noisy[:, :, 2], axis=0)).all()
    np.testing.assert_allclose(smooth.mean(0), noisy.mean(0), atol=0.2)


def test_similarity_fit_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (20, 2))
    a = 0.3
    m = np.array([[1.5 * np.cos(a), -1.5 * np.sin(a), 5], [1.5 * np.sin(a), 1.5 * np.cos(a), -7]])
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(fit_similarity(src, dst), m, atol=1e-9)


def test_heatmaps_peak_on_the_lips():
    lms = np.zeros((68, 2), np.float32)
    lms[:, 0] = np.linspace(40, 200, 68)
    lms[:, 1] = 180
    maps = render_heatmaps(lms, 32, 256)
    assert maps.shape == (3, 32, 32)
    assert maps.max() <= 1.0
    assert maps[1, 180 // 8].max() > 0.5 and maps[1, 5].max() < 1e-3


def test_colour_match_recovers_a_known_gain_and_offset():
    rng = np.random.default_rng(0)
    reference = rng.integers(40, 200, (64, 64, 3)).astype(np.uint8)
    shifted = np.clip(reference.astype(np.float32) * 0.8 + 20, 0, 255).astype(np.uint8)
    region = np.zeros((64, 64), bool)
    region[8:56, 8:56] = True
    fixed = crop.match_colours(shifted, reference, region)
    assert np.abs(fixed.astype(int) - reference.astype(int))[region].mean() < 1.5
    # Too small a region to measure: the image is left alone.
    assert np.array_equal(crop.match_colours(shifted, reference, np.zeros((64, 64), bool)), shifted)


def test_paste_mask_stays_near_the_mouth_inside_the_lower_face(backend, portrait):
    cfg = FaceConfig()
    lms = face.image_landmarks(portrait, backend, cfg)
    lc = crop.to_crop_coords(lms, crop.crop_transform(lms, cfg))
    paste, lower = crop.paste_mask(lc), crop.lower_face_mask(lc)
    assert (paste <= lower + 1e-6).all()
    assert paste[int(lc[62, 1]), int(lc[62, 0])] > 0.9
    # The jaw corners, far from the lips, keep the real pixels.
    assert paste[int(lc[2, 1]), int(lc[2, 0])] < 0.05


# ------------------------------------------------------------------------------------------ loading dlib once, faster

# Every face dlib found in these images, with the code before the models were shared and the detector bundled
# (tests/face_landmarks_reference.json, main at d01d31a): the astronaut (two faces: hers and one on the
# shoulder patch) and the first six portraits of ../shared/data/portraits (the 2204 and 3511 px ones detect on a
# downscaled copy). dlib's points are whole pixels, so the same detector and predictor give them exactly; 0.5 px
# allows nothing but a float round-off, and any changed detection (box, pyramid, order) moves points by pixels.
REFERENCE = Path(__file__).parent / "face_landmarks_reference.json"
REFERENCE_ATOL_PX = 0.5


def _reference_images() -> list[tuple[Path, list]]:
    ref = json.loads(REFERENCE.read_text())
    paths = [ASSETS / "astronaut.jpg", *(SHARED_DATA / "portraits" / name for name in ref if name != "astronaut.jpg")]
    return [(p, ref[p.name]) for p in paths if p.is_file()]


def test_bundled_detector_is_dlibs_own():
    import dlib

    assert face.FRONTAL_FACE_DETECTOR_FILE.is_file()
    assert pickle.dumps(face.frontal_face_detector()) == pickle.dumps(dlib.get_frontal_face_detector())


def test_dlib_models_are_loaded_once_per_process():
    a, b = face.DlibLandmarks(), face.make_backend("dlib")
    assert a._detector is b._detector and a._predictor is b._predictor


@pytest.mark.parametrize("path, faces", _reference_images(), ids=lambda v: getattr(v, "name", ""))
def test_landmarks_and_crop_match_the_reference(backend, path, faces):
    image = media.load_image(path)
    found = backend.detect(image)
    assert len(found) == len(faces)
    for got, want in zip(found, faces, strict=True):
        np.testing.assert_allclose(got, np.asarray(want, np.float32), atol=REFERENCE_ATOL_PX)
    cfg = FaceConfig()
    want = crop.crop_transform(np.asarray(faces[0], np.float32), cfg)
    np.testing.assert_allclose(crop.crop_transform(face.image_landmarks(image, backend, cfg), cfg), want, atol=1e-3)


def test_background_preload_loads_the_models_every_later_use_shares(tmp_path):
    from facecast.streaming.config import ServerConfig
    from facecast.streaming.web.serve import load_face_models_for, load_face_models_for_sessions

    thread = face.preload_dlib_in_background()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert face.DlibLandmarks()._predictor is face.dlib_models()[1]
    # a server from a bundle loads nothing before it listens, from a portrait it does; once ready, unless told not to
    assert load_face_models_for(tmp_path) is None
    assert load_face_models_for_sessions(ServerConfig(preload_face_landmarks=False)) is None
    for started in (load_face_models_for(ASSETS / "astronaut.jpg"), load_face_models_for_sessions(ServerConfig())):
        assert started is not None
        started.join(timeout=60)


def test_the_shared_models_give_the_same_faces_from_many_threads(backend, portrait):
    from concurrent.futures import ThreadPoolExecutor

    images = [portrait, np.ascontiguousarray(portrait[:, ::-1])] * 4  # two different images, interleaved
    alone = [backend.detect(image) for image in images[:2]]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda image: face.DlibLandmarks().detect(image), images))
    for i, faces in enumerate(together):
        assert len(faces) == len(alone[i % 2])
        for got, want in zip(faces, alone[i % 2], strict=True):
            np.testing.assert_array_equal(got, want)
