"""dlib's 68-point predictor converted into arrays and evaluated in numpy (engine/avatar/shape_predictor.py): dlib's
own points on many faces, and the converted copy kept, reused, and made again when it must be.

The predictor's copy for most tests is the test session's (conftest's ``landmark_model_cache``: converted once); the
tests of the conversion itself write into folders of their own (each conversion is under a second)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ASSETS, SHARED_DATA, needs_shared

from facecast.engine import media
from facecast.engine.avatar import face, shape_predictor
from facecast.engine.config import ShapePredictorConfig

LOGGER = "facecast.engine.avatar.shape_predictor"


@pytest.fixture(scope="module")
def source() -> Path:
    return face.dlib_predictor_path()


@pytest.fixture(scope="module")
def predictor(source):
    return shape_predictor.load_shape_predictor(source)


@pytest.fixture(scope="module")
def dlib_predictor(source):
    return face.DlibShapePredictor(source)


def _views(image: np.ndarray, scales: tuple[float, ...], angles: tuple[float, ...]) -> list[np.ndarray]:
    """The image (its longer side made at most ``MAX_SIDE_PX`` first) scaled and turned."""
    import cv2

    h, w = image.shape[:2]
    fit = min(1.0, MAX_SIDE_PX / max(h, w))
    views = []
    for scale in scales:
        for angle in angles:
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale * fit)
            views.append(
                np.ascontiguousarray(cv2.warpAffine(image, m, (round(w * scale * fit), round(h * scale * fit))))
            )
    return views


MAX_SIDE_PX = 800  # larger portraits are made smaller: dlib's detector takes seconds on them, and adds nothing here


def _boxes(image: np.ndarray, rng: np.random.Generator, jitters: int, arbitrary: int) -> list[tuple[int, ...]]:
    """The faces dlib's detector finds, each also moved and resized at random by up to a quarter of its size, and
    boxes anywhere (some over the image's edges, where feature pixels read 0)."""
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in face.frontal_face_detector()(image, 0)]
    for left, top, right, bottom in list(boxes):
        size = right - left
        for _ in range(jitters):
            j = rng.integers(-size // 4, size // 4 + 1, 4)
            boxes.append((left + j[0], top + j[1], right + j[2], bottom + j[3]))
    h, w = image.shape[:2]
    for _ in range(arbitrary):
        x, y, size = rng.integers(-100, w), rng.integers(-100, h), rng.integers(20, max(21, w // 2))
        boxes.append((x, y, x + size, y + size + rng.integers(-10, 11)))
    return [tuple(int(v) for v in box) for box in boxes]


def _compare(predictor, dlib_predictor, views: list[np.ndarray], rng: np.random.Generator, **boxes) -> int:
    """Every box of every view, in RGB and in grey (dlib reads the two differently), through both predictors: the
    points must be equal. Returns how many faces were compared."""
    import cv2

    compared = 0
    for rgb in views:
        grey = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        for box in _boxes(rgb, rng, **boxes):
            for image in (rgb, grey):
                np.testing.assert_array_equal(predictor(image, box), dlib_predictor(image, box), err_msg=f"{box}")
                compared += 1
    return compared


def test_numpy_gives_dlibs_points_on_the_astronaut(predictor, dlib_predictor):
    image = media.load_image(ASSETS / "astronaut.jpg")  # two faces
    views = _views(image, scales=(0.5, 1.0, 1.7), angles=(-20, 0, 15))
    compared = _compare(predictor, dlib_predictor, views, np.random.default_rng(0), jitters=10, arbitrary=8)
    assert compared >= 200


@needs_shared()
@pytest.mark.parametrize("name", sorted(p.name for p in (SHARED_DATA / "portraits").glob("*") if p.is_file()))
def test_numpy_gives_dlibs_points_on_the_portraits(predictor, dlib_predictor, name):
    image = media.load_image(SHARED_DATA / "portraits" / name)
    views = _views(image, scales=(0.6, 1.0), angles=(-10, 0, 10))
    assert _compare(predictor, dlib_predictor, views, np.random.default_rng(1), jitters=3, arbitrary=2) >= 24


def test_the_leaves_are_added_in_dlibs_order():
    """The predictor sums a level's 500 leaves with numpy's reduce over the first axis because numpy adds the rows
    one after another, as dlib does (a pairwise sum rounds differently). A numpy that changes that fails here."""
    rng = np.random.default_rng(2)
    for _ in range(20):
        terms = (rng.standard_normal((501, 136)) * rng.uniform(1e-4, 1, (501, 1))).astype(np.float32)
        in_order = terms[0].copy()
        for row in terms[1:]:
            in_order += row
        np.testing.assert_array_equal(np.add.reduce(terms, axis=0), in_order)


def test_the_landmark_backend_uses_numpy_and_finds_what_dlibs_own_finds():
    image = media.load_image(ASSETS / "astronaut.jpg")
    numpy_backend = face.DlibLandmarks()
    dlib_backend = face.DlibLandmarks(predictor_cfg=ShapePredictorConfig(evaluator="dlib"))
    assert isinstance(numpy_backend._predictor, shape_predictor.NumpyShapePredictor)
    assert isinstance(dlib_backend._predictor, face.DlibShapePredictor)
    for got, want in zip(numpy_backend.detect(image), dlib_backend.detect(image), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="evaluator"):
        ShapePredictorConfig(evaluator="fast")


def test_conversion_writes_a_whole_copy_once_and_maps_it(source, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, LOGGER):
        first = shape_predictor.load_shape_predictor(source, tmp_path)
    assert "once on this machine" in caplog.text
    folder = shape_predictor.converted_folder(source, tmp_path)
    assert folder.parent == tmp_path / shape_predictor.CACHE_SUBDIR
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary folder left behind
    manifest = json.loads((folder / shape_predictor.MANIFEST).read_text())
    assert manifest["source"]["size"] == source.stat().st_size
    assert manifest["shape"] == {"cascades": 15, "trees": 500, "splits": 15, "features": 500, "points": 68}
    assert isinstance(first.arrays.leaf_values, np.memmap)  # the converted copy, mapped, not the arrays in memory

    caplog.clear()
    with caplog.at_level(logging.WARNING, LOGGER):
        again = shape_predictor.load_shape_predictor(source, tmp_path)
    assert caplog.text == ""  # nothing converted
    for name in shape_predictor.ShapePredictorArrays.FILES:
        np.testing.assert_array_equal(getattr(again.arrays, name), getattr(first.arrays, name))


def test_a_new_copy_replaces_the_old_copies_of_the_same_file_only(source, tmp_path):
    copies = tmp_path / shape_predictor.CACHE_SUBDIR
    for name, path in (("reinstalled", str(source)), ("elsewhere", "/another/env/model.dat")):
        (copies / name).mkdir(parents=True)
        (copies / name / shape_predictor.MANIFEST).write_text(json.dumps({"source": {"path": path}}))
    (copies / ".half-written").mkdir()  # another process's temporary folder: no manifest yet
    shape_predictor.load_shape_predictor(source, tmp_path)
    kept = shape_predictor.converted_folder(source, tmp_path).name
    assert sorted(p.name for p in copies.iterdir()) == sorted([kept, "elsewhere", ".half-written"])


def test_the_cache_folder_follows_the_environment_and_the_source_file(tmp_path, monkeypatch):
    monkeypatch.setenv(shape_predictor.CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert shape_predictor.default_cache_root() == tmp_path / "mine"
    monkeypatch.delenv(shape_predictor.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert shape_predictor.default_cache_root() == tmp_path / "xdg" / "facecast"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert shape_predictor.default_cache_root() == Path.home() / ".cache" / "facecast"

    model = tmp_path / "model.dat"
    model.write_bytes(b"1234")
    before = shape_predictor.converted_folder(model, tmp_path)
    os.utime(model, ns=(0, 10**9))  # another file of the same size
    assert shape_predictor.converted_folder(model, tmp_path) != before
    model.write_bytes(b"12345")
    assert shape_predictor.converted_folder(model, tmp_path) != before


def test_a_damaged_copy_is_converted_again(source, tmp_path, caplog):
    shape_predictor.load_shape_predictor(source, tmp_path)
    leaves = shape_predictor.converted_folder(source, tmp_path) / "leaf_values.npy"
    with open(leaves, "r+b") as f:
        f.truncate(leaves.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, LOGGER):
        again = shape_predictor.load_shape_predictor(source, tmp_path)
    assert "unusable" in caplog.text
    assert leaves.stat().st_size > 60e6 and isinstance(again.arrays.leaf_values, np.memmap)


def test_an_unwritable_cache_leaves_the_process_its_arrays_in_memory(source, tmp_path, predictor, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with caplog.at_level(logging.WARNING, LOGGER):
        in_memory = shape_predictor.load_shape_predictor(source, not_a_folder)
    assert "could not keep" in caplog.text
    image = media.load_image(ASSETS / "astronaut.jpg")
    np.testing.assert_array_equal(in_memory(image, (179, 83, 266, 170)), predictor(image, (179, 83, 266, 170)))


def test_a_file_that_is_not_a_shape_predictor_is_a_clear_error(source, tmp_path):
    noise = np.random.default_rng(3).integers(0, 256, 100_000, np.uint8).tobytes()
    starts_well = source.read_bytes()[:20] + noise  # a plausible start, then nonsense
    for name, data in [("cut.dat", source.read_bytes()[:5_000_000]), ("noise.dat", noise), ("odd.dat", starts_well)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(shape_predictor.ShapePredictorFormatError, match=name):
            shape_predictor.read_dlib_shape_predictor(tmp_path / name)


def test_only_8_bit_grey_or_rgb_images(predictor):
    with pytest.raises(ValueError, match="8-bit"):
        predictor(np.zeros((64, 64, 3), np.float32), (0, 0, 32, 32))
