"""dlib's 68-point shape predictor as memory-mapped numpy arrays, and the predictor itself in numpy.

Why: ``dlib.shape_predictor(file)`` parses the 100 MB ``shape_predictor_68_face_landmarks.dat`` (dlib's portable
serialisation: ~33 million variable-length integers, two per float) in 0.4-0.6 s on every process start, holding
the GIL. Here the file is converted once per machine (``load_shape_predictor``, when there is no copy yet: under a
second) into plain ``.npy`` arrays in a per-user cache folder; a process then maps them in ~3 ms, and the operating
system shares their pages between processes.

The model is an ensemble of regression trees (Kazemi & Sullivan, CVPR 2014) as dlib implements it
(``dlib/image_processing/shape_predictor.h``): a cascade of levels, each a forest of trees of equal depth whose
splits compare two "feature pixels". A level's feature pixels are points fixed relative to a landmark of the mean
shape (an anchor and a delta), carried to the current estimate by the similarity transform between the mean shape
and that estimate, and read at whole pixels of the image's grey level. Each tree adds its leaf's 68 x 2 shape
increment. ``NumpyShapePredictor`` repeats dlib's arithmetic step for step (float32 where dlib uses float, float64
where it uses double, its rounding to whole pixels), so that it gives dlib's points, not just points close to them:
``tests/test_shape_predictor.py`` compares the two on many faces.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WeightsError

FORMAT_VERSION = 1  # of the converted folder's layout; a change converts every cache afresh
CACHE_DIR_ENV = "FACECAST_CACHE_DIR"  # overrides $XDG_CACHE_HOME/facecast (and ~/.cache/facecast)
CACHE_SUBDIR = "shape_predictor"
MANIFEST = "manifest.json"

# dlib's integer format: a control byte whose low 4 bits count the little-endian bytes that follow, and whose high bit
# says the number is negative (dlib/serialize.h, "INTEGRAL SERIALIZATION FORMAT").
_LENGTH_BITS = 0x0F
_NEGATIVE_BIT = 0x80
_MAX_INT_BYTES = 8
_INT_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(_MAX_INT_BYTES + 1)], np.uint64)  # by byte count
# float_details exponents that stand for +inf, -inf and NaN (dlib/float_details.h); leaf values never take them.
_SPECIAL_EXPONENT = 32000
# Leaves read side by side (``_float_runs``): a numpy step's arrays of this many stay in the CPU's cache; fewer would
# spend more of the time in Python (measured: 8192 beat 4096 and 32768).
_LANES = 8192
# A file's bytes are read with this much zero padding, so that an 8-byte read at any of its bytes stays inside.
_PADDING = 16
SHAPE_PREDICTOR_VERSION = 1  # the only version dlib writes (``serialize(const shape_predictor&, ...)``)

log = logging.getLogger(__name__)


class ShapePredictorFormatError(WeightsError):
    """The file is not a dlib shape predictor this converter understands."""


# ------------------------------------------------------------------------------------------------------------------
# Reading dlib's serialisation


class _Tokens:
    """Sequential reader of dlib-serialised integers and floats (for the small parts of the file)."""

    def __init__(self, data: bytearray, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def int(self) -> int:
        control = self.data[self.pos]
        n = control & _LENGTH_BITS
        if n > _MAX_INT_BYTES:
            raise ShapePredictorFormatError(f"bad integer control byte {control:#x} at byte {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if control & _NEGATIVE_BIT else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()  # float_details: mantissa first, then the exponent
        if exponent >= _SPECIAL_EXPONENT:
            raise ShapePredictorFormatError(f"an infinite or NaN value before byte {self.pos}")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def matrix_size(self) -> tuple[int, int]:
        # dlib writes -nr, -nc (its newer format) and reads either sign
        return abs(self.int()), abs(self.int())

    def skip(self, count: int) -> None:
        data, pos = self.data, self.pos
        for _ in range(count):
            pos += 1 + (data[pos] & _LENGTH_BITS)
        self.pos = pos


def _words(data: bytearray) -> np.ndarray:
    """The little-endian 8-byte word at every byte position of ``data`` (an unaligned view, nothing copied)."""
    return np.ndarray((len(data) - _MAX_INT_BYTES,), "<u8", buffer=data, strides=(1,))


def _decode_ints(data: bytearray, starts: np.ndarray) -> np.ndarray:
    """The integers whose control bytes are at ``starts``, all at once: the 8 bytes after each control byte are
    read as one little-endian word and masked to the integer's length."""
    control = np.frombuffer(data, np.uint8)[starts]
    n = control & _LENGTH_BITS
    if n.size and n.max() > _MAX_INT_BYTES:
        raise ShapePredictorFormatError("bad integer control byte in the file")
    value = (_words(data)[starts + 1] & _INT_MASKS[n]).astype(np.int64)
    return np.where(control & _NEGATIVE_BIT, -value, value)


def _token_starts(data: bytearray, first: np.ndarray, count: int) -> np.ndarray:
    """Where each of ``count`` consecutive integers begins, for many runs at once: (len(first), count) int64.

    The integers' lengths vary, so one run must be read in order; runs are read side by side (one numpy step
    advances every run by one integer)."""
    buf = np.frombuffer(data, np.uint8)
    starts = np.empty((count, len(first)), np.int64)
    pos = np.asarray(first, np.int64)
    for k in range(count):
        starts[k] = pos
        pos = pos + 1 + (buf[pos] & _LENGTH_BITS)
    return starts.T


_TOO_LONG = 1 << 40


def _control_tables(max_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per control byte (0-255), for an integer of at most ``max_bytes`` bytes: its length with the control byte,
    the mask of its value bits (after its control byte is shifted off), its sign (+1 or -1). An integer too long
    gets a length that takes its run far past the end of any file (``_float_runs`` then raises)."""
    control = np.arange(256)
    n = control & _LENGTH_BITS
    length = np.where(n <= max_bytes, 1 + n, _TOO_LONG).astype(np.int64)
    mask = _INT_MASKS[np.minimum(n, _MAX_INT_BYTES)]
    sign = np.where(control & _NEGATIVE_BIT, -1, 1)
    return length, mask, sign.astype(np.float32), sign.astype(np.int32)


_MANTISSA_LENGTH, _MANTISSA_MASK, _MANTISSA_SIGN, _ = _control_tables(3)  # a float's 24 bits
_EXPONENT_LENGTH, _EXPONENT_MASK, _, _EXPONENT_SIGN = _control_tables(2)  # an int16
_LOW_BYTE = np.uint64(0xFF)
_BYTE_BITS = np.uint64(8)


def _float_runs(data: bytearray, first: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` consecutive floats from each of the positions ``first``, read side by side: (len(first), count)
    float32, and where each run ends.

    A float is two integers, a mantissa and an exponent (dlib's ``float_details``). A float's mantissa has at most
    3 bytes (24 bits) and its exponent 2 (an int16): with their control bytes 7, so the 8-byte word at a float's
    first byte holds all of it. One numpy step reads that word for every run, decodes it (through tables indexed
    by the control bytes) and moves each run on by the float's length. Runs are read in batches of ``_LANES`` so
    that a step's arrays stay in the CPU's cache. The value is ldexp((float)mantissa, exponent), as dlib converts
    it back (exact for a 24-bit mantissa)."""
    words = _words(data)
    values = np.empty((count, len(first)), np.float32)
    pos = np.array(first, np.int64)
    for k in range(count):
        try:
            w = words[pos]  # (np.take would first copy the whole unaligned view)
        except IndexError:
            raise ShapePredictorFormatError("a float whose mantissa or exponent is longer than a float's") from None
        control = (w & _LOW_BYTE).astype(np.intp)
        e_word = w >> ((_MANTISSA_LENGTH[control] << 3).astype(np.uint64))  # the exponent at the word's bottom
        e_control = (e_word & _LOW_BYTE).astype(np.intp)
        pos += _MANTISSA_LENGTH[control]
        pos += _EXPONENT_LENGTH[e_control]
        mantissa = ((w >> _BYTE_BITS) & _MANTISSA_MASK[control]).astype(np.float32)
        mantissa *= _MANTISSA_SIGN[control]
        exponent = ((e_word >> _BYTE_BITS) & _EXPONENT_MASK[e_control]).astype(np.int32)
        exponent *= _EXPONENT_SIGN[e_control]
        np.ldexp(mantissa, exponent, out=values[k])
    if len(first) and pos.max() > len(data):
        raise ShapePredictorFormatError("a float whose mantissa or exponent is longer than a float's")
    return values.T, pos


def _floats_at(data: bytearray, starts: np.ndarray) -> np.ndarray:
    """The floats that begin at ``starts`` (any shape), as float32."""
    return _float_runs(data, starts.ravel(), 1)[0].reshape(starts.shape)


def _find_all(data: bytearray, pattern: bytes, start: int) -> np.ndarray:
    """Every position of ``pattern`` in ``data`` from ``start``, overlapping ones too."""
    found = []
    i = data.find(pattern, start)
    while i >= 0:
        found.append(i)
        i = data.find(pattern, i + 1)
    return np.array(found, np.int64)


@dataclass(frozen=True)
class ShapePredictorArrays:
    """dlib's shape predictor as arrays. C cascade levels, T trees a level, S splits and L = S + 1 leaves a tree,
    F feature pixels a level, P points."""

    initial_shape: np.ndarray  # (P, 2) float32: the mean shape, in the face box's unit square
    anchor_idx: np.ndarray  # (C, F) int32: the mean-shape point each feature pixel is placed from
    deltas: np.ndarray  # (C, F, 2) float32: the feature pixel's offset from its anchor point, in the mean shape
    split_features: np.ndarray  # (C, T, S, 2) int32: the two feature pixels a split compares
    split_thresholds: np.ndarray  # (C, T, S) float32: go left when pixel 1 - pixel 2 > threshold
    leaf_values: np.ndarray  # (C, T, L, P * 2) float32: the shape increment (x0, y0, x1, y1, ...) of each leaf

    FILES = ("initial_shape", "anchor_idx", "deltas", "split_features", "split_thresholds", "leaf_values")

    @property
    def shape(self) -> dict[str, int]:
        c, t, s, _ = self.split_features.shape
        return {
            "cascades": c,
            "trees": t,
            "splits": s,
            "features": self.deltas.shape[1],
            "points": len(self.initial_shape),
        }


def read_dlib_shape_predictor(path: Path) -> ShapePredictorArrays:
    """Parse dlib's serialised ``shape_predictor`` (version int, initial_shape, forests, anchor_idx, deltas; see
    ``serialize(const shape_predictor&, ...)`` in dlib/image_processing/shape_predictor.h) into arrays.

    Every number in the file has its own length, so the file can only be read in order, which in Python is slow
    (its 33 million integers). But 98% of it is the leaves' shape increments: matrices of P * 2 floats, each
    introduced by the same header (its serialised row and column counts). Every occurrence of that header is taken
    as a leaf, and all are decoded side by side (``_float_runs``), which also says where each ends. The header's
    bytes can also occur inside a leaf's numbers (once in the shipped file), so one walk through the trees in order,
    in Python but jumping over each leaf, then keeps the true leaves: a tree's leaves follow each other."""
    size = path.stat().st_size
    data = bytearray(size + _PADDING)
    with open(path, "rb") as f:
        if f.readinto(memoryview(data)[:size]) != size:
            raise ShapePredictorFormatError(f"{path} changed while it was read")
    try:
        return _parse(data, size)
    except ShapePredictorFormatError as e:
        raise ShapePredictorFormatError(f"{path}: {e}") from None
    except (IndexError, ValueError, OverflowError) as e:  # a number or a structure past the end of the file
        raise ShapePredictorFormatError(f"{path} is not a dlib shape predictor this reader understands ({e})") from e


def _parse(data: bytearray, size: int) -> ShapePredictorArrays:
    """``read_dlib_shape_predictor`` of the file's ``size`` bytes in ``data`` (padded)."""
    head = _Tokens(data)
    if (version := head.int()) != SHAPE_PREDICTOR_VERSION:
        raise ShapePredictorFormatError(f"shape predictor version {version}, expected 1")
    nr, nc = head.matrix_size()
    if nc != 1 or nr % 2 or nr * 4 > size:  # (a float takes at least 4 bytes)
        raise ShapePredictorFormatError(f"the initial shape is {nr} x {nc}, expected a column of x, y pairs")
    initial = np.array([head.float() for _ in range(nr)], np.float32)
    n_cascades = head.int()
    forests_start = head.pos

    # The first tree sets the shape every tree must have: its split count and its leaf matrices' header.
    probe = _Tokens(data, forests_start)
    n_trees = probe.int()
    n_splits = probe.int()
    if n_cascades * n_trees * n_splits * 8 > size:  # (a split takes at least 8 bytes)
        raise ShapePredictorFormatError(f"{n_cascades} x {n_trees} trees of {n_splits} splits do not fit the file")
    probe.skip(4 * n_splits)  # idx1, idx2, threshold (two integers)
    n_leaves = probe.int()
    header_start = probe.pos
    if probe.matrix_size() != (nr, 1) or n_leaves != n_splits + 1:
        raise ShapePredictorFormatError(f"unexpected tree layout ({n_splits} splits, {n_leaves} leaves)")
    header = bytes(data[header_start : probe.pos])

    candidates = _find_all(data, header, forests_start)
    values = np.empty((len(candidates), nr), np.float32)
    ends = np.empty(len(candidates), np.int64)
    for lo in range(0, len(candidates), _LANES):
        hi = lo + _LANES
        values[lo:hi], ends[lo:hi] = _float_runs(data, candidates[lo:hi] + len(header), nr)
    candidate_at = {pos: i for i, pos in enumerate(candidates.tolist())}
    ends_list = ends.tolist()

    split_starts = np.empty((n_cascades, n_trees), np.int64)
    leaves = np.empty((n_cascades, n_trees, n_leaves), np.int64)  # the true leaves' candidate numbers
    walk = _Tokens(data, forests_start)
    for c in range(n_cascades):
        if walk.int() != n_trees:
            raise ShapePredictorFormatError(f"cascade level {c} has another tree count than the first")
        for t in range(n_trees):
            if walk.int() != n_splits:
                raise ShapePredictorFormatError(f"tree {t} of level {c} has another depth than the first")
            split_starts[c, t] = walk.pos
            walk.skip(4 * n_splits)
            if walk.int() != n_leaves:
                raise ShapePredictorFormatError(f"tree {t} of level {c} has another leaf count")
            pos = walk.pos
            row = leaves[c, t]
            for leaf in range(n_leaves):
                try:
                    row[leaf] = i = candidate_at[pos]
                except KeyError:
                    raise ShapePredictorFormatError(f"no leaf where one should begin, byte {pos}") from None
                pos = ends_list[i]
            walk.pos = pos

    # anchor_idx: a vector (one per level) of vectors of unsigned longs; deltas: the same of 2-vectors of floats.
    if walk.int() != n_cascades:
        raise ShapePredictorFormatError("anchor_idx has another level count than the forests")
    anchor_rows, delta_rows = [], []
    for _ in range(n_cascades):
        anchor_rows.append([walk.int() for _ in range(walk.int())])
    if walk.int() != n_cascades:
        raise ShapePredictorFormatError("deltas has another level count than the forests")
    for _ in range(n_cascades):
        delta_rows.append([walk.float() for _ in range(2 * walk.int())])
    if walk.pos != size:
        raise ShapePredictorFormatError(f"{size - walk.pos} bytes left after the shape predictor")
    anchor_idx = np.array(anchor_rows, np.int32)
    deltas = np.array(delta_rows, np.float32).reshape(n_cascades, -1, 2)
    if anchor_idx.shape != deltas.shape[:2] or anchor_idx.min() < 0 or anchor_idx.max() >= nr // 2:
        raise ShapePredictorFormatError("feature pixels anchored at points that do not exist")

    starts = _token_starts(data, split_starts.ravel(), 4 * n_splits)  # idx1, idx2, threshold (two integers)
    ints = _decode_ints(data, starts[:, 0::4].ravel()), _decode_ints(data, starts[:, 1::4].ravel())
    split_features = np.stack(ints, -1).reshape(n_cascades, n_trees, n_splits, 2).astype(np.int32)
    split_thresholds = _floats_at(data, starts[:, 2::4]).reshape(n_cascades, n_trees, n_splits)
    if split_features.min() < 0 or split_features.max() >= deltas.shape[1]:
        raise ShapePredictorFormatError("a split reads a feature pixel that does not exist")
    leaf_values = values[leaves.ravel()].reshape(n_cascades, n_trees, n_leaves, nr)
    return ShapePredictorArrays(
        initial.reshape(-1, 2), anchor_idx, deltas, split_features, split_thresholds, leaf_values
    )


# ------------------------------------------------------------------------------------------------------------------
# The converted copy, in a per-user cache folder


def default_cache_root() -> Path:
    """$FACECAST_CACHE_DIR, else $XDG_CACHE_HOME/facecast, else ~/.cache/facecast."""
    if override := os.environ.get(CACHE_DIR_ENV):
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facecast"


def converted_folder(source: Path, cache_root: Path | None = None) -> Path:
    """Where ``source``'s converted copy is kept: named by the file's size and modification time (a stat, not a
    read of its 100 MB), so that another file (or a reinstalled one) is converted anew."""
    st = Path(source).stat()
    key = f"{Path(source).stem}-{st.st_size}-{st.st_mtime_ns}-v{FORMAT_VERSION}"
    return (cache_root or default_cache_root()) / CACHE_SUBDIR / key


def save_converted(arrays: ShapePredictorArrays, folder: Path, manifest: dict) -> None:
    """Write the arrays (``.npy``) and a manifest into ``folder``, atomically: into a temporary folder beside it,
    renamed into place when complete, so that a reader never sees half a copy. Another process that got there
    first wins (its copy is the same)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for name in ShapePredictorArrays.FILES:
            np.save(temporary / f"{name}.npy", getattr(arrays, name))
        shapes = {name: list(getattr(arrays, name).shape) for name in ShapePredictorArrays.FILES}
        (temporary / MANIFEST).write_text(json.dumps({**manifest, "format": FORMAT_VERSION, "arrays": shapes}))
        try:
            temporary.rename(folder)
        except OSError:
            if not (folder / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def load_converted(folder: Path) -> ShapePredictorArrays:
    """The arrays of a converted copy; the leaves memory-mapped (read from disk as faces need them, and shared
    between processes through the page cache), the rest (2 MB) read. Raises FileNotFoundError when there is
    none, ShapePredictorFormatError when it is not one this version wrote whole."""
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ShapePredictorFormatError(f"{folder} is of format {manifest.get('format')}, not {FORMAT_VERSION}")
    arrays = {}
    for name in ShapePredictorArrays.FILES:
        try:
            arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r" if name == "leaf_values" else None)
        except ValueError as e:  # a truncated file
            raise ShapePredictorFormatError(f"{folder / name}.npy is unreadable: {e}") from e
        if list(arrays[name].shape) != manifest["arrays"][name]:
            raise ShapePredictorFormatError(f"{folder / name}.npy is not of the shape its manifest says")
    return ShapePredictorArrays(**arrays)


def remove_stale_copies(kept: Path, source_path: str) -> None:
    """Delete the other converted copies of the file at ``source_path`` (a reinstall changes its mtime, so its
    copy is made anew; the old 64 MB would stay for good). Copies of files elsewhere (another environment's) stay:
    deleting them would only have that environment convert again."""
    for folder in kept.parent.iterdir():
        if folder == kept or not folder.is_dir():
            continue
        try:
            other = json.loads((folder / MANIFEST).read_text())["source"]["path"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a whole copy (another process may be writing it): not ours to judge
        if other == source_path:
            shutil.rmtree(folder, ignore_errors=True)


def load_shape_predictor(source: Path, cache_root: Path | None = None) -> NumpyShapePredictor:
    """The numpy predictor of dlib's predictor file ``source``, from its converted copy under ``cache_root``
    (default ``default_cache_root()``). Without one, the file is converted first: once per machine (and per
    file), 0.7-0.9 s here against dlib's own 0.4-0.45 s load, so only that first process is slower, and by less
    than half a second. A copy that cannot be written (a read-only cache) leaves this process with the arrays in
    memory."""
    folder = converted_folder(source, cache_root)
    try:
        return NumpyShapePredictor(load_converted(folder))
    except FileNotFoundError:
        pass
    except (ShapePredictorFormatError, ValueError, KeyError, OSError) as e:
        log.warning("the converted landmark model in %s is unusable (%s): converting it again", folder, e)
        shutil.rmtree(folder, ignore_errors=True)
    log.warning("converting dlib's 68-point landmark model for fast loading: once on this machine, into %s", folder)
    start = time.perf_counter()
    arrays = read_dlib_shape_predictor(Path(source))
    st = Path(source).stat()
    manifest = {
        "source": {"path": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        "convert_s": round(time.perf_counter() - start, 3),
        "shape": arrays.shape,
    }
    try:
        save_converted(arrays, folder, manifest)
    except OSError as e:
        log.warning("could not keep the converted landmark model (%s): this process uses it from memory", e)
        return NumpyShapePredictor(arrays)
    remove_stale_copies(folder, str(source))
    # the mapped copy rather than the arrays in memory: its pages are shared, not 65 MB of this process's own
    return NumpyShapePredictor(load_converted(folder))


# ------------------------------------------------------------------------------------------------------------------
# The predictor


Box = tuple[int, int, int, int]  # left, top, right, bottom: dlib.rectangle's corners, whole pixels


class NumpyShapePredictor:
    """``dlib.shape_predictor(image, rectangle)`` in numpy: the 68 points, (P, 2) float32 whole pixels.

    ``image``: RGB uint8 (H, W, 3), read as dlib reads an RGB image's grey level, (r + g + b) // 3; or grey uint8
    (H, W). Nothing is kept between calls: one instance may be used from many threads at once. The leaves are
    read from ``arrays.leaf_values`` as each face needs them (500 rows a cascade level), so a memory-mapped copy
    is never read whole."""

    def __init__(self, arrays: ShapePredictorArrays) -> None:
        self.arrays = arrays
        c, t, s, _ = arrays.split_features.shape
        self.cascades, self.trees, self.splits, self.depth = c, t, s, int(np.log2(s + 1))
        if 2**self.depth != s + 1:
            raise ShapePredictorFormatError(f"trees of {s} splits are not complete binary trees")
        self.initial_shape = np.ascontiguousarray(arrays.initial_shape, np.float32)
        # find_similarity_transform's "from" side is always the mean shape: its centring is done once, in double
        initial = self.initial_shape.astype(np.float64)
        self._initial_centred = initial - initial.mean(0)
        self._initial_spread = float((self._initial_centred**2).sum())
        # Per level (lists, so that a level's arrays are indexed without a level index): the two feature pixels and
        # the threshold of every split of every tree, the trees one after another.
        self._split_first = [np.ascontiguousarray(f[..., 0].ravel(), np.intp) for f in arrays.split_features]
        self._split_second = [np.ascontiguousarray(f[..., 1].ravel(), np.intp) for f in arrays.split_features]
        self._thresholds = [np.ascontiguousarray(v.ravel(), np.float32) for v in arrays.split_thresholds]
        # where each feature pixel's anchor point's x and y are in the shape as the leaves hold it (x0, y0, x1, ...)
        self._anchor_xy = [np.stack([2 * v, 2 * v + 1]).astype(np.intp) for v in arrays.anchor_idx]
        self._deltas = [np.ascontiguousarray(v.T, np.float32) for v in arrays.deltas]  # (2, F): x row, y row
        leaves = arrays.leaf_values.shape[2]
        self._leaf_rows = np.asarray(arrays.leaf_values).reshape(c * t * leaves, -1)  # a view: stays mapped
        self._tree_first_split = np.arange(t, dtype=np.intp) * s
        # the row of each tree's first leaf, less s (a leaf's node number is s + its index)
        self._first_leaf_row = [(level * t + np.arange(t)) * leaves - s for level in range(c)]

    @property
    def num_parts(self) -> int:
        return len(self.initial_shape)

    def _similarity(self, shape: np.ndarray) -> np.ndarray:
        """The 2x2 part of dlib's ``find_tform_between_shapes(initial_shape, shape)`` (``shape``: x0, y0, x1, ...),
        as float, which dlib casts it to.

        dlib solves Umeyama's least squares in double with an SVD of the 2x2 covariance; for 2-D points its
        solution is the closed form [[a, -b], [b, a]] below (the same numbers up to double rounding, which the cast
        to float absorbs). The mean shape is centred, so the current shape needs no centring in the covariance."""
        c00, c01, c10, c11 = (shape.reshape(-1, 2).astype(np.float64).T @ self._initial_centred).ravel().tolist()
        a = (c00 + c11) / self._initial_spread
        b = (c10 - c01) / self._initial_spread
        return np.array([[a, -b], [b, a]], np.float32)

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"an 8-bit grey or RGB image is needed, not {image.dtype} of shape {image.shape}")
        left, top, right, bottom = (int(v) for v in box)
        # unnormalizing_tform(rect) maps (0, 0) to the box's top-left corner and (1, 1) to its bottom-right one;
        # then dlib rounds to the nearest pixel, floor(v + 0.5). In double every step is exact here (a float times
        # a small whole number, plus whole numbers and a half), so adding the half to the corner first is the same.
        scale = np.array([[right - left], [bottom - top]], np.float64)
        corner = np.array([[left + 0.5], [top + 0.5]], np.float64)
        rows, cols = image.shape[:2]
        pixels = image.reshape(rows * cols, -1)  # (H * W, 3) or (H * W, 1): a view of a C-ordered image, else a copy
        channels = pixels.shape[1]
        shape = self.initial_shape.ravel()  # x0, y0, x1, y1, ...: as the leaves hold their increments
        for level in range(self.cascades):
            # Feature pixels: tform * delta + the anchor point, in float as dlib computes it (each product rounded,
            # then their sum, then the anchor added); row 0 is x, row 1 is y.
            tform = self._similarity(shape)
            dx, dy = self._deltas[level]
            points = tform[:, :1] * dx + tform[:, 1:] * dy
            points += shape[self._anchor_xy[level]]
            x, y = np.floor(points * scale + corner).astype(np.intp)
            inside = (x.astype(np.uintp) < cols) & (y.astype(np.uintp) < rows)  # negatives wrap to huge: outside
            values = pixels[np.where(inside, y * cols + x, 0)].astype(np.int16)
            # dlib's grey level of an RGB pixel: (r + g + b) / 3 in unsigned int; outside the image reads 0
            grey = values[:, 0] if channels == 1 else (values[:, 0] + values[:, 1] + values[:, 2]) // 3
            features = grey * inside

            # Every split of every tree of the level (go right, 2i + 2, unless f[idx1] - f[idx2] > thresh), then
            # every tree's path through its splits, all trees at once, one depth at a time.
            right = features[self._split_first[level]] - features[self._split_second[level]] <= self._thresholds[level]
            node = np.zeros(self.trees, np.intp)
            for _ in range(self.depth):
                node = 2 * node + 1 + right[self._tree_first_split + node]
            # dlib adds the trees' leaves to the shape one after another, in float. Row 0 holds the shape, the
            # leaves follow: numpy reduces over the first axis of a C-ordered array row by row, in order (each row
            # added to the running total across all columns at once), which is that same order of additions.
            # (tests/test_shape_predictor.py checks it; a pairwise sum would round differently.)
            terms = np.empty((self.trees + 1, shape.size), np.float32)
            terms[0] = shape
            np.take(self._leaf_rows, self._first_leaf_row[level] + node, axis=0, out=terms[1:])
            shape = np.add.reduce(terms, axis=0)
        return np.floor(shape.reshape(-1, 2).T * scale + corner).T.astype(np.float32)
