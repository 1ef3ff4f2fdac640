"""``facecast prepare``: the per-avatar work done once (face crops, landmarks, latents) and cached as a bundle.

The latents (L2V's inputs) are made only for a model whose sessions run L2V (``needs_latents``); an avatar without
them gets them encoded when such a session meets it (``Avatar.ensure_latents``).

A portrait gives a one-frame avatar. A video gives an avatar whose idle motion (blinks, head motion) loops under
the generated mouth: frames play forward then backward (ping-pong) so the loop has no jump.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import crop, media
from ..backend import Backend
from ..checkpoint import file_hash
from ..config import ModelConfig
from ..errors import FaceError, InputError
from ..landmarks import STABLE, fit_similarity, register_to
from ..latents import EncodeFn, encode_images, mask_lower_face
from ..mouth_prior import MouthPrior, shows_l2v
from ..warp import most_closed_frame, pick_sources
from . import face
from .frames_video import FRAMES_VIDEO_FILE, FramesVideoConfig, read_frames_video, write_frames_video

# 2: a video avatar's frames are a video beside avatar.npz (``frames_video``) and its crops are re-derived at load;
# version 1 bundles (every array in avatar.npz) still load. Version 1 code refuses version 2 bundles by this number.
# 3: the latents are stored as float16 (``STORED_LATENT_DTYPE``) and widened to float32 at load; version 2 code
# would hand float16 latents to the model, so it refuses version 3 bundles by this number.
# 4: the latents may be absent: an avatar prepared for a model that shows no L2V picture has none (``needs_latents``)
# and they are encoded at load where a session will need them (``Avatar.ensure_latents``). Version 3 code would
# fail on the missing arrays (a KeyError, not a message), so it refuses version 4 bundles by this number.
BUNDLE_VERSION = 4
READABLE_BUNDLE_VERSIONS = (1, 2, 3, 4)
# The latents were 13 of a video avatar's 15.5 MB (float32, which zlib barely compresses). The live session with
# the shipped model does not read them at all (its mouth prior draws the mouth: ``LipSyncSession.runs_l2v``), so
# its bundles carry none; where L2V runs float16 keeps them within 0.002 of float32 (values up to ~5;
# docs/enroll.md "Bundle size").
STORED_LATENT_DTYPE = np.float16
LATENT_ARRAYS = ("latents", "masked_latents")
ADAPTER_FILE = "l2v_lora.safetensors"  # in an enrolled bundle (``facecast enroll``): its L2V adapter
A2L_FILE = "a2l.safetensors"  # in an enrolled bundle: the person's A2L (small, 250 kB: stored whole)
DEFAULT_MAX_AVATAR_FRAMES = 250  # 10 s of idle video at 25 fps is plenty for a natural loop
MAX_FRAME_PX = 1920  # larger video frames are downscaled once here, so pasting stays cheap

log = logging.getLogger(__name__)


def needs_latents(cfg: ModelConfig, prior: MouthPrior | None) -> bool:
    """Whether sessions of a model (its config and mouth prior) read an avatar's latents: only those that run L2V
    (``LipSyncSession.runs_l2v``). Preparation for any other model skips the encode (most of its time)."""
    return shows_l2v(cfg.face, prior)


@dataclass
class Avatar:
    frames: np.ndarray  # uint8 (T, H, W, 3) the original frames that generated mouths are pasted into
    transforms: np.ndarray  # float64 (T, 2, 3) image -> crop
    crops: np.ndarray  # uint8 (T, 256, 256, 3)
    landmarks: np.ndarray  # float32 (T, 68, 2) in crop pixels
    # float32 (T, C, 32, 32), of the crops and of the crops with the lower face blanked (``mask_lower_face``); read
    # only by sessions that run L2V. None when prepared for a model that does not (``needs_latents``): then
    # ``ensure_latents`` encodes them, once, if a session that runs L2V gets this avatar.
    latents: np.ndarray | None
    masked_latents: np.ndarray | None
    reference: np.ndarray  # float32 (68, 2): the pose-free landmarks A2L displaces
    identity_index: int = 0  # the identity reference (the most closed mouth); the warp picks its sources per frame
    source: str = ""
    # The enrolled bundle whose A2L and L2V adapter this person runs (``backend.Weights``; None: the model's own).
    # Set by ``load_avatar``; every model call of a session on this avatar names it, so sessions on one backend
    # each run their own person's weights whatever else is loaded.
    enrolment: Path | None = None
    _warp_sources: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _latents_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def has_latents(self) -> bool:
        return self.latents is not None and self.masked_latents is not None

    def ensure_latents(self, encode: EncodeFn, cfg: ModelConfig) -> Avatar:
        """Encode the latents if this avatar has none (prepared for a model that shows no L2V picture), as
        ``prepare_avatar`` would have: once per avatar, whichever thread asks first (the others wait for it).
        Returns the avatar."""
        with self._latents_lock:
            if not self.has_latents:
                log.info(
                    "%s has no latents (prepared for a model without L2V): encoding its %d frame(s) now",
                    self.source or "the avatar",
                    self.num_frames,
                )
                self.latents, self.masked_latents = encode_latents(encode, self.crops, cfg)
        return self

    def warp_sources(self, cfg: ModelConfig) -> np.ndarray:
        """(T,) int: per frame, the frame whose lower face the warp moves (``warp.pick_sources``; the identity
        frame when ``FaceConfig.warp_source_candidates`` is 1). Computed once per avatar and setting (about 0.2 s
        for 250 frames): ``load_avatar`` does it while loading, so a live server does not spend it on its event
        loop when a session starts."""
        face = cfg.face
        upper_rows = cfg.l2v.mask_top_px - face.feather_px  # the rows the pipeline keeps: pose and light
        key = (face.warp_source_candidates, face.warp_source_min_gap_frames, face.warp_source_switch_cost, upper_rows)
        if key not in self._warp_sources:
            if face.warp_source_candidates > 1:
                self._warp_sources[key] = pick_sources(
                    self.crops,
                    self.landmarks,
                    upper_rows,
                    face.warp_source_candidates,
                    face.warp_source_min_gap_frames,
                    face.warp_source_switch_cost,
                )
            else:
                self._warp_sources[key] = np.full(self.num_frames, self.identity_index, np.int64)
        return self._warp_sources[key]

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def index_for(self, n: int) -> int:
        """Which avatar frame shows under output frame n (ping-pong loop)."""
        t = self.num_frames
        if t == 1:
            return 0
        period = 2 * (t - 1)
        k = n % period
        return k if k < t else period - k

    def save(self, folder: Path, model_hash: str, video: FramesVideoConfig = FramesVideoConfig()) -> Path:
        """Write the bundle: ``avatar.npz`` and ``meta.json``, and for a video avatar ``frames.mp4``.

        A video avatar's frames go to a video (``video``: 92 -> 2.3 MB for 250 frames of 640×360) and its crops are
        not stored: ``load`` warps them from the decoded frames with the stored transforms, as ``aligned_crops``
        made them (30 MB saved). A portrait keeps its frame and crop in avatar.npz, losslessly."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"transforms": self.transforms, "landmarks": self.landmarks, "reference": self.reference}
        if self.has_latents:  # else none are stored: ``load`` gives None, ``ensure_latents`` encodes them if needed
            arrays.update({name: getattr(self, name).astype(STORED_LATENT_DTYPE) for name in LATENT_ARRAYS})
        frames_video = None
        if self.num_frames >= video.min_frames:
            write_frames_video(folder / FRAMES_VIDEO_FILE, self.frames, video)
            frames_video = {"file": FRAMES_VIDEO_FILE, "codec": video.codec, "pix_fmt": video.pix_fmt, "crf": video.crf}
        else:
            arrays.update(frames=self.frames, crops=self.crops)
            (folder / FRAMES_VIDEO_FILE).unlink(missing_ok=True)  # a stale one from an earlier save into this folder
        # Compressed: the latents are most of what is left; np.load reads compressed and uncompressed bundles
        # alike, so older bundles still load.
        np.savez_compressed(folder / "avatar.npz", **arrays)
        meta = {
            "version": BUNDLE_VERSION,
            "model_hash": model_hash,
            "source": self.source,
            "identity_index": self.identity_index,
            "frames": self.num_frames,
            "frame_size": list(self.frames.shape[1:3]),  # (H, W) pixels
            "crop_px": int(self.crops.shape[1]),
            "frames_video": frames_video,  # None: frames and crops are in avatar.npz
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: Path, model_hash: str | None = None) -> Avatar:
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file() or not (folder / "avatar.npz").is_file():
            raise InputError(
                f"{folder} is not an avatar bundle: make one with `facecast prepare --avatar IMAGE --out {folder}`."
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("version") not in READABLE_BUNDLE_VERSIONS:
            raise InputError(f"avatar bundle {folder} is from another facecast version: prepare it again.")
        if model_hash is not None and meta.get("model_hash") != model_hash:
            raise InputError(
                f"avatar bundle {folder} was prepared for another model: run `facecast prepare` again with this model."
            )
        with np.load(folder / "avatar.npz") as z:
            arrays = {k: z[k] for k in z.files}
        for name in LATENT_ARRAYS:  # float16 on disk since version 3; the model is given float32 as before
            arrays[name] = arrays[name].astype(np.float32) if name in arrays else None  # none since version 4
        if "frames" not in arrays:  # a version 2 video avatar: frames from its video, crops warped from them
            # The crops then match the frames they are pasted back into; prepare's (which the stored latents were
            # encoded from) differ from them only by the video's loss (>= 45 dB PSNR on a real clip, docs/enroll.md).
            video = meta.get("frames_video") or {}
            shape = (int(meta["frames"]), *map(int, meta["frame_size"]))
            frames = read_frames_video(folder / video.get("file", FRAMES_VIDEO_FILE), shape)
            arrays["frames"] = frames
            arrays["crops"] = crop.warp_frames_to_crop(frames, arrays["transforms"], int(meta["crop_px"]))
        return cls(**arrays, identity_index=meta["identity_index"], source=meta.get("source", ""))


def _downscale(frame: np.ndarray, max_px: int) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    s = max_px / max(h, w)
    if s >= 1:
        return frame
    return cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def load_avatar_frames(path: Path, cfg: ModelConfig, max_frames: int) -> list[np.ndarray]:
    path = Path(path)
    if media.is_image(path):
        image = media.load_image(path)
        if max(image.shape[:2]) > cfg.face.max_image_px:
            image = _downscale(image, cfg.face.max_image_px)
        return [_downscale(image, MAX_FRAME_PX)]
    frames = [_downscale(f, MAX_FRAME_PX) for f in media.iter_video_frames(path, cfg.audio.fps, max_frames=max_frames)]
    if not frames:
        raise InputError(f"{path} has no video frames: give a portrait image or a video of a face.")
    return frames


def aligned_crops(
    frames: list[np.ndarray], lms: np.ndarray, cfg: ModelConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames and their image landmarks (T, 68, 2) -> smoothed image->crop transforms (T, 2, 3), the 256² crops
    (T, 256, 256, 3) and the landmarks in crop pixels (T, 68, 2)."""
    transforms = np.stack([crop.crop_transform(lm, cfg.face) for lm in lms])
    transforms = crop.smooth_transforms(transforms, cfg.face.smooth_frames)
    crops = crop.warp_frames_to_crop(frames, transforms, cfg.face.crop_px)
    lms_crop = np.stack([crop.to_crop_coords(lm, m) for lm, m in zip(lms, transforms, strict=True)])
    return transforms, crops, lms_crop


def encode_latents(encode: EncodeFn, crops: np.ndarray, cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """An avatar's latents: (T, C, 32, 32) of its crops and of its crops with the lower face blanked."""
    return encode_images(encode, crops), encode_images(encode, mask_lower_face(crops, cfg))


def prepare_avatar(
    path: Path,
    encode: EncodeFn | None,
    cfg: ModelConfig,
    backend: face.LandmarkBackend | None = None,
    max_frames: int = DEFAULT_MAX_AVATAR_FRAMES,
) -> Avatar:
    """An avatar from a portrait or an idle video; ``encode`` None: without latents (``needs_latents``)."""
    backend = backend or face.make_backend("dlib", cfg=cfg.face)
    frames = load_avatar_frames(path, cfg, max_frames)
    if len(frames) == 1:
        lms = face.image_landmarks(frames[0], backend, cfg.face, str(path))[None]
    else:
        lms, found = face.video_landmarks(frames, backend, cfg.face, str(path))
        if found.mean() < 0.5:
            raise FaceError(f"the face is visible in only {found.mean():.0%} of {path}: use a steadier idle video.")
    transforms, crops, lms_crop = aligned_crops(frames, lms, cfg)
    return avatar_from_crops(frames, transforms, crops, lms_crop, encode, cfg, str(path))


def avatar_from_crops(
    frames: list[np.ndarray] | np.ndarray,
    transforms: np.ndarray,
    crops: np.ndarray,
    lms_crop: np.ndarray,
    encode: EncodeFn | None,
    cfg: ModelConfig,
    source: str,
) -> Avatar:
    """The avatar of aligned frames (``aligned_crops``' transforms, crops and crop landmarks), as ``facecast
    prepare`` and ``facecast enroll`` make it; ``encode`` None: without latents (``needs_latents``)."""
    # The reference is the first frame's landmarks; every frame is registered onto it for the mean shape.
    reference = register_to(lms_crop, lms_crop[0]).mean(0) if len(lms_crop) > 1 else lms_crop[0]
    latents, masked_latents = encode_latents(encode, crops, cfg) if encode is not None else (None, None)
    return Avatar(
        frames=np.stack(frames),
        transforms=transforms,
        crops=crops,
        landmarks=lms_crop.astype(np.float32),
        latents=latents,
        masked_latents=masked_latents,
        reference=reference.astype(np.float32),
        identity_index=most_closed_frame(lms_crop),
        source=source,
    )


def model_hash(model_dir: Path) -> str:
    return file_hash(Path(model_dir) / "autoencoder.safetensors")


def pose_to_frame(reference: np.ndarray, frame_landmarks: np.ndarray) -> np.ndarray:
    """2x3 similarity from the reference landmarks' pose to one avatar frame's pose (by stable points)."""
    return fit_similarity(reference[STABLE].astype(np.float64), frame_landmarks[STABLE].astype(np.float64))


def has_adapter(bundle: Path) -> bool:
    return (Path(bundle) / ADAPTER_FILE).is_file()


def enrolment_of(bundle: Path) -> dict | None:
    """The ``enrolment`` record of a ``facecast enroll`` bundle's meta.json; None for a ``facecast prepare``
    bundle (or a folder without meta.json)."""
    meta = Path(bundle) / "meta.json"
    return json.loads(meta.read_text()).get("enrolment") if meta.is_file() else None


def is_enrolled(bundle: Path) -> bool:
    """A ``facecast enroll`` bundle (an L2V adapter, a person's A2L or motion gain), not a ``facecast prepare`` one."""
    return has_adapter(bundle) or enrolment_of(bundle) is not None


def runs_own_a2l(bundle: Path) -> bool:
    """Whether an enrolled bundle's sessions run an A2L other than the model's as it is: the person's own
    (``A2L_FILE``) or the model's at the person's motion gain (``adapters.enrolled_a2l`` builds it)."""
    enrolment = enrolment_of(bundle) or {}
    return (Path(bundle) / A2L_FILE).is_file() or enrolment.get("a2l_motion_gain") is not None


def check_backend(backend: object, bundle: Path | None) -> Path | None:
    """The weights (``backend.Weights``) an avatar from ``bundle`` runs on ``backend``: an enrolled bundle, its
    weights loaded into the backend now (copies: the backend's own weights and every other session are left as
    they were), or None for a portrait, a video or a prepared bundle. Refuses backends that cannot run enrolments;
    they opt in with ``load_enrolment(bundle)``."""
    if bundle is None or not is_enrolled(bundle):
        return None
    load = getattr(backend, "load_enrolment", None)
    if load is None:
        raise InputError(
            f"{bundle} is an enrolled bundle (its own A2L or L2V adapter): the {getattr(backend, 'name', '?')} "
            "backend cannot run it. Use --backend onnxruntime or torch."
        )
    weights = Path(bundle).resolve()
    load(weights)
    return weights


def load_avatar(path: Path, backend: Backend, landmarks: face.LandmarkBackend | None = None) -> Avatar:
    """A `facecast prepare` or `facecast enroll` bundle (checked against the backend's encoder), or a portrait or
    idle video prepared now (``landmarks``: the face landmark detector, default dlib). The latents are there if
    and only if the backend's model runs L2V (``needs_latents``): a bundle without them gets them encoded here."""
    path = Path(path)
    latents = needs_latents(backend.cfg, backend.mouth_prior)
    if path.is_dir():
        avatar = Avatar.load(path, backend.autoencoder_hash)
        avatar.enrolment = check_backend(backend, path)  # this avatar's own weights, loaded next to the others
        if latents:
            avatar.ensure_latents(backend.encode, backend.cfg)
    else:
        if not path.is_file():
            raise InputError(
                f"avatar not found: {path}. Give a portrait, an idle video or a `facecast prepare` bundle."
            )
        avatar = prepare_avatar(path, backend.encode if latents else None, backend.cfg, landmarks)
    avatar.warp_sources(backend.cfg)
    return avatar
