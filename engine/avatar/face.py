"""Face detection and 68-point landmarks.

Default backend: dlib's HOG face detector + the 68-point predictor shipped in the PyPI package
``face_recognition_models`` (offline, 100 MB on disk, ~10 ms a frame here; see docs/face_landmarks.md for the
comparison with MediaPipe). ``face-alignment`` (FAN) is used when its weights are on disk and asked for.

Making dlib's two models was most of a portrait's preparation (0.3 s for the detector, 0.4-0.6 s for the predictor,
20 ms for the detection itself; docs/benchmarks.md, "Cold start"): the detector now comes from a binary copy (1 ms);
the predictor's trees are converted once per machine into memory-mapped arrays and evaluated in numpy
(``shape_predictor.py``: dlib's own points, mapped in milliseconds); both are loaded once per process
(``dlib_models``) and shared by every ``DlibLandmarks``, and a server loads them in the background
(``preload_dlib_in_background``; ``streaming/web/serve.py``), which also makes the one-time conversion happen there.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..config import FaceConfig, ShapePredictorConfig
from ..errors import DependencyError, FacecastError, FaceError, WeightsError
from .shape_predictor import Box, ShapePredictorFormatError, load_shape_predictor

log = logging.getLogger(__name__)


class LandmarkBackend(Protocol):
    def detect(self, image_rgb: np.ndarray) -> list[np.ndarray]:
        """All faces in the image as (68, 2) float32 pixel landmarks, largest first."""
        ...

    def refine(self, image_rgb: np.ndarray, previous: np.ndarray) -> np.ndarray | None:
        """Landmarks of the face near ``previous`` (68, 2) in a video, or None when it was lost."""
        ...


def _box_of(lms: np.ndarray, pad: float = 0.1) -> tuple[int, int, int, int]:
    x0, y0 = lms.min(0)
    x1, y1 = lms.max(0)
    p = pad * max(x1 - x0, y1 - y0)
    return int(x0 - p), int(y0 - p), int(x1 + p), int(y1 + p)


def _area(lms: np.ndarray) -> float:
    x0, y0, x1, y1 = _box_of(lms, 0.0)
    return float((x1 - x0) * (y1 - y0))


def dlib_predictor_path() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("face_recognition_models is missing: pip install face_recognition_models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise WeightsError(f"dlib's 68-point model is missing at {path}: reinstall face_recognition_models")
    return path


# dlib's frontal face detector, as ``dlib.get_frontal_face_detector()`` makes it, saved with its ``save``: that call
# parses the detector from text compiled into dlib (0.3 s a call here); this binary copy loads in 1 ms.
# tests/test_face.py checks that it is the same detector, byte for byte, as the installed dlib's own.
FRONTAL_FACE_DETECTOR_FILE = Path(__file__).resolve().parents[1] / "assets" / "dlib_frontal_face_detector.svm"

_dlib_lock = threading.Lock()  # one thread loads (or converts) a model; the others wait for it instead of doing it too
# dlib's object detector keeps the image it scans in itself (its documentation: concurrent use of one instance is not
# safe), and its Python call lets go of the GIL while it scans: the shared one is used by one thread at a time. The
# shape predictor needs no lock: the numpy one keeps nothing between calls, and dlib's documentation says one of its
# instances may be used from many threads at once.
_detector_lock = threading.Lock()


def _import_dlib() -> Any:  # dlib ships no type information
    try:
        import dlib
    except ImportError as e:
        raise DependencyError("dlib is missing: pip install dlib-bin") from e
    return dlib


def frontal_face_detector() -> Any:
    """dlib's HOG frontal face detector, from the bundled copy (``FRONTAL_FACE_DETECTOR_FILE``); from dlib's own
    text when the copy is missing or this dlib cannot read it."""
    dlib = _import_dlib()
    if FRONTAL_FACE_DETECTOR_FILE.is_file():
        try:
            return dlib.fhog_object_detector(str(FRONTAL_FACE_DETECTOR_FILE))
        except RuntimeError:  # a dlib whose serialisation differs: its own, slower, is the same detector
            pass
    return dlib.get_frontal_face_detector()


class ShapePredictor(Protocol):
    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The (68, 2) float32 whole-pixel landmarks of the face in ``box`` of an RGB (or grey) uint8 image."""
        ...


class DlibShapePredictor:
    """dlib's own predictor (``ShapePredictorConfig.evaluator`` "dlib"), called as ``NumpyShapePredictor`` is."""

    def __init__(self, path: Path) -> None:
        self._dlib = _import_dlib()
        self._predictor = self._dlib.shape_predictor(str(path))

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        shape = self._predictor(image, self._dlib.rectangle(*box))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def _shape_predictor(path: Path, cfg: ShapePredictorConfig) -> ShapePredictor:
    if cfg.evaluator == "numpy":
        try:
            return load_shape_predictor(path, Path(cfg.cache_dir) if cfg.cache_dir else None)
        except ShapePredictorFormatError as e:  # a model file of another layout: dlib reads whatever it wrote
            log.warning("%s: using dlib's own predictor", e)
    return DlibShapePredictor(path)


@cache
def _loaded_dlib_models(predictor: Path, cfg: ShapePredictorConfig) -> tuple[Any, ShapePredictor]:
    return frontal_face_detector(), _shape_predictor(predictor, cfg)


def dlib_models(
    predictor_path: Path | None = None, predictor_cfg: ShapePredictorConfig = ShapePredictorConfig()
) -> tuple[Any, ShapePredictor]:
    """The process's dlib detector and 68-point predictor (``predictor_path``: default ``dlib_predictor_path()``),
    loaded on the first call (milliseconds; the first process on a machine converts dlib's file first, under a
    second) and shared by every later one (the detector behind ``_detector_lock``)."""
    path = Path(predictor_path or dlib_predictor_path()).resolve()
    with _dlib_lock:
        return _loaded_dlib_models(path, predictor_cfg)


def preload_dlib_in_background(
    predictor_path: Path | None = None, predictor_cfg: ShapePredictorConfig = ShapePredictorConfig()
) -> threading.Thread:
    """Start loading dlib's models on a thread of their own and return it: ``import dlib`` and, on a machine's first
    run, the predictor's conversion (``shape_predictor.py``; with ``evaluator`` "dlib", dlib's 0.4-0.6 s load, which
    holds the GIL). onnxruntime's session set-up and model calls let go of the GIL: a server's backend load and
    warm-up overlap with it. Whoever needs the models meanwhile waits for this load (``dlib_models``' lock) rather
    than starting another."""

    def load() -> None:
        try:
            dlib_models(predictor_path, predictor_cfg)
        except FacecastError:  # dlib or its model missing: the first real use raises the same error, with its message
            pass

    thread = threading.Thread(target=load, name="facecast-dlib-load", daemon=True)
    thread.start()
    return thread


class DlibLandmarks:
    def __init__(
        self,
        cfg: FaceConfig = FaceConfig(),
        predictor_path: Path | None = None,
        predictor_cfg: ShapePredictorConfig = ShapePredictorConfig(),
    ) -> None:
        self.cfg = cfg
        self._detector, self._predictor = dlib_models(predictor_path, predictor_cfg)

    def detect(self, image_rgb: np.ndarray) -> list[np.ndarray]:
        image = np.ascontiguousarray(image_rgb)
        scale = min(1.0, self.cfg.detect_max_px / max(image.shape[:2]))
        small = image if scale == 1.0 else _resize(image, scale)
        with _detector_lock:
            rects = self._detector(small, 0)
            if len(rects) == 0:  # small faces: try again on a 2x upsampled pyramid level
                rects = self._detector(small, 1)
        faces = []
        for r in rects:
            box = tuple(int(round(v / scale)) for v in (r.left(), r.top(), r.right(), r.bottom()))
            faces.append(self._predictor(image, box))
        return sorted(faces, key=_area, reverse=True)

    def refine(self, image_rgb: np.ndarray, previous: np.ndarray) -> np.ndarray | None:
        # The predictor is run in the box of the previous frame's landmarks (tracking); a face that moved too far
        # shows up as a poor fit of the box, and is then re-detected.
        x0, y0, x1, y1 = _box_of(previous, pad=0.0)
        lms = self._predictor(np.ascontiguousarray(image_rgb), (x0, y0, x1, y1))
        shift = np.linalg.norm(lms.mean(0) - previous.mean(0))
        return lms if shift < 0.25 * (x1 - x0) else None


class FaceAlignmentLandmarks:
    """FAN landmarks from the ``face-alignment`` package, with its weights taken from a local folder.

    ``weights_dir`` must hold ``checkpoints/`` as torch.hub lays it out (the files face-alignment would download:
    ``2DFAN4-*.zip`` and ``s3fd-*.pth``). Nothing is downloaded.
    """

    def __init__(self, weights_dir: Path, cfg: FaceConfig = FaceConfig()) -> None:
        try:
            import face_alignment
            import torch
        except ImportError as e:
            raise DependencyError("face-alignment is not installed: pip install 'facecast[face-alignment]'") from e
        ckpt = Path(weights_dir) / "checkpoints"
        if not list(ckpt.glob("2DFAN4*")) or not list(ckpt.glob("s3fd*")):
            raise WeightsError(
                f"face-alignment weights not found in {ckpt}: put 2DFAN4-*.zip and s3fd-*.pth there "
                "(copied from a machine where face-alignment ran once, ~/.cache/torch/hub/checkpoints)."
            )
        torch.hub.set_dir(str(weights_dir))
        self.cfg = cfg
        self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device="cpu")

    def detect(self, image_rgb: np.ndarray) -> list[np.ndarray]:
        found = self._fa.get_landmarks_from_image(image_rgb) or []
        return sorted((np.asarray(f[:, :2], np.float32) for f in found), key=_area, reverse=True)

    def refine(self, image_rgb: np.ndarray, previous: np.ndarray) -> np.ndarray | None:
        x0, y0, x1, y1 = _box_of(previous)
        found = self._fa.get_landmarks_from_image(image_rgb, detected_faces=[[x0, y0, x1, y1]])
        return np.asarray(found[0][:, :2], np.float32) if found else None


def make_backend(name: str = "dlib", weights: Path | None = None, cfg: FaceConfig = FaceConfig()) -> LandmarkBackend:
    if name == "dlib":
        return DlibLandmarks(cfg, weights)
    if name == "face-alignment":
        if weights is None:
            raise WeightsError("--face-backend face-alignment needs --face-weights DIR (its local weights folder).")
        return FaceAlignmentLandmarks(weights, cfg)
    raise ValueError(f"unknown face backend {name!r}: use 'dlib' or 'face-alignment'")


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def check_face_size(lms: np.ndarray, cfg: FaceConfig, where: str) -> None:
    left, right = lms[36:42].mean(0), lms[42:48].mean(0)
    height = np.linalg.norm((left + right) / 2 - lms[48:68].mean(0))
    if height < cfg.min_face_px:
        raise FaceError(
            f"the face in {where} is too small ({height:.0f} px from eyes to mouth, need {cfg.min_face_px}): "
            "use a closer shot or a higher-resolution image."
        )


def image_landmarks(
    image_rgb: np.ndarray, backend: LandmarkBackend, cfg: FaceConfig, where: str = "the image"
) -> np.ndarray:
    """The landmarks of the one face to animate: (68, 2). Several faces -> the largest (documented choice)."""
    faces = backend.detect(image_rgb)
    if not faces:
        raise FaceError(f"no face found in {where}: use a frontal, well-lit photo where the face is clearly visible.")
    check_face_size(faces[0], cfg, where)
    return faces[0]


def video_landmarks(
    frames: Sequence[np.ndarray], backend: LandmarkBackend, cfg: FaceConfig, where: str = "the video"
) -> tuple[np.ndarray, np.ndarray]:
    """Track one face through frames. Returns landmarks (T, 68, 2) and a found mask (T,).

    Frames where the face is lost are filled from the nearest found frame; the caller decides what to do with
    them (the found mask says which). No face in any frame raises FaceError.
    """
    n = len(frames)
    lms = np.zeros((n, 68, 2), np.float32)
    found = np.zeros(n, bool)
    previous = None
    for t, frame in enumerate(frames):
        # Detecting in every frame keeps the predictor from drifting; tracking only bridges missed detections.
        faces = backend.detect(frame)
        if faces and previous is not None:
            current = min(faces, key=lambda f: float(np.linalg.norm(f.mean(0) - previous.mean(0))))
        elif faces:
            current = faces[0]
        else:
            current = backend.refine(frame, previous) if previous is not None else None
        if current is not None:
            lms[t], found[t], previous = current, True, current
    if not found.any():
        raise FaceError(f"no face found in any frame of {where}: give a video where one face is clearly visible.")
    # Fill lost frames with the nearest found one so the crop box stays defined.
    idx = np.flatnonzero(found)
    nearest = idx[np.abs(np.arange(n)[:, None] - idx[None]).argmin(1)]
    lms[~found] = lms[nearest[~found]]
    check_face_size(lms[idx[0]], cfg, where)
    return lms, found
