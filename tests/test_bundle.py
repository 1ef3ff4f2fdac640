"""Avatar bundles on disk: a video avatar's frames as a video beside avatar.npz (crops warped from them at load), a
portrait's frame kept losslessly, old all-in-npz bundles still read, and a broken frames video refused with what
to do. No model: the avatars are synthetic arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facecast.engine import crop
from facecast.engine.avatar.frames_video import FRAMES_VIDEO_FILE, write_frames_video
from facecast.engine.avatar.prepare import BUNDLE_VERSION, LATENT_ARRAYS, STORED_LATENT_DTYPE, Avatar
from facecast.engine.errors import InputError
from facecast.engine.evaluation.metrics import psnr

CROP_PX = 64  # small crops keep the test fast; the bundle records its crop size


def synthetic_avatar(frames: int = 6, height: int = 45, width: int = 67) -> Avatar:
    """A moving smooth image (odd sizes on purpose) with a little sensor noise, and arrays of the
    shapes and dtypes prepare makes."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:height, :width].astype(np.float32)
    images = []
    for t in range(frames):
        r = 120 + 80 * np.sin((x + 2 * t) / 9) * np.cos(y / 7)
        g = 90 + 60 * np.cos((x - y + t) / 11)
        # A moving disc, its edge 2-3 px soft as a lens makes it (an aliased edge is not what a camera gives).
        b = 60 + 50 / (1 + np.exp(np.hypot(x - 30 - t, y - 22) - 11))
        image = np.stack([r, g, b], -1) + rng.normal(0, 0.5, (height, width, 3))
        images.append(np.clip(image + 0.5, 0, 255).astype(np.uint8))
    stack = np.stack(images)
    transforms = np.stack([np.array([[1.1, 0.05, -3.0 + t], [-0.05, 1.1, 2.0]]) for t in range(frames)])
    return Avatar(
        frames=stack,
        transforms=transforms,
        crops=np.stack([crop.warp_to_crop(f, m, CROP_PX) for f, m in zip(stack, transforms, strict=True)]),
        landmarks=rng.uniform(0, CROP_PX, (frames, 68, 2)).astype(np.float32),
        latents=rng.normal(size=(frames, 4, 8, 8)).astype(np.float32),
        masked_latents=rng.normal(size=(frames, 4, 8, 8)).astype(np.float32),
        reference=rng.uniform(0, CROP_PX, (68, 2)).astype(np.float32),
        identity_index=min(2, frames - 1),
        source="synthetic",
    )


def assert_stored_arrays_equal(loaded: Avatar, original: Avatar, exact_latents: bool = False) -> None:
    """Stored arrays are given back exactly, but for the latents, stored as float16 since version 3: within
    float16's rounding (a relative 2^-11) of the float32 originals, and float32 again in memory."""
    for name in ("transforms", "landmarks", "reference"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name), err_msg=name)
    for name in LATENT_ARRAYS:
        got, want = getattr(loaded, name), getattr(original, name)
        assert got.dtype == np.float32, name
        if exact_latents:
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=2.0**-11, atol=1e-7, err_msg=name)
    assert loaded.identity_index == original.identity_index and loaded.source == original.source


def test_video_avatar_round_trips_through_its_frames_video(tmp_path):
    avatar = synthetic_avatar()
    bundle = avatar.save(tmp_path / "bundle", "hash")
    assert (bundle / FRAMES_VIDEO_FILE).is_file()
    with np.load(bundle / "avatar.npz") as z:
        assert "frames" not in z.files and "crops" not in z.files  # the video and the warp give them back
    loaded = Avatar.load(bundle, "hash")
    assert loaded.frames.dtype == np.uint8 and loaded.frames.shape == avatar.frames.shape
    # Tolerance: every frame >= 40 dB PSNR and within 20 grey levels everywhere (measured: worst frame 42.8 dB,
    # 13 levels). These tiny synthetic frames code worse than camera footage: a 640×360 clip's face crops are all
    # >= 45 dB (engine/evaluation/studies/bundle_size.py, docs/enroll.md).
    assert psnr(avatar.frames, loaded.frames).min() >= 40.0
    assert np.abs(loaded.frames.astype(np.int16) - avatar.frames).max() <= 20
    # Crops are the loaded frames warped as prepare warped the originals: exactly, and so close to prepare's.
    warped = np.stack([crop.warp_to_crop(f, m, CROP_PX) for f, m in zip(loaded.frames, avatar.transforms, strict=True)])
    np.testing.assert_array_equal(loaded.crops, warped)
    assert loaded.crops.shape == avatar.crops.shape and psnr(avatar.crops, loaded.crops).min() >= 40.0
    assert_stored_arrays_equal(loaded, avatar)
    assert json.loads((bundle / "meta.json").read_text())["version"] == BUNDLE_VERSION
    with np.load(bundle / "avatar.npz") as z:
        assert all(z[name].dtype == STORED_LATENT_DTYPE for name in LATENT_ARRAYS)  # half the bytes of float32


def test_frames_video_is_the_same_every_save(tmp_path):
    """An odd width once let x264 read uninitialised bytes (frames_video.WIDTH_MULTIPLE): the same avatar coded
    differently from save to save, sometimes 90 grey levels off."""
    avatar = synthetic_avatar(width=67)
    first = (avatar.save(tmp_path / "a", "hash") / FRAMES_VIDEO_FILE).read_bytes()
    assert all((avatar.save(tmp_path / "b", "hash") / FRAMES_VIDEO_FILE).read_bytes() == first for _ in range(3))


def test_portrait_bundle_keeps_its_frame_and_crop_losslessly(tmp_path):
    folder = tmp_path / "bundle"
    synthetic_avatar().save(folder, "hash")  # a video avatar first: its frames video must not outlive it
    portrait = synthetic_avatar(frames=1)
    portrait.save(folder, "hash")
    assert not (folder / FRAMES_VIDEO_FILE).exists()
    loaded = Avatar.load(folder, "hash")
    np.testing.assert_array_equal(loaded.frames, portrait.frames)
    np.testing.assert_array_equal(loaded.crops, portrait.crops)
    assert_stored_arrays_equal(loaded, portrait)


def test_old_format_bundle_still_loads(tmp_path):
    """Version 1: every array, frames and crops included, in avatar.npz; meta.json without the new keys."""
    avatar = synthetic_avatar()
    folder = tmp_path / "old"
    folder.mkdir()
    names = ("frames", "transforms", "crops", "landmarks", "latents", "masked_latents", "reference")
    np.savez_compressed(folder / "avatar.npz", **{k: getattr(avatar, k) for k in names})
    meta = {"version": 1, "model_hash": "hash", "source": "synthetic", "identity_index": 2, "frames": 6}
    (folder / "meta.json").write_text(json.dumps(meta))
    loaded = Avatar.load(folder, "hash")
    np.testing.assert_array_equal(loaded.frames, avatar.frames)
    np.testing.assert_array_equal(loaded.crops, avatar.crops)
    assert_stored_arrays_equal(loaded, avatar, exact_latents=True)


def test_version_2_bundle_with_float32_latents_loads_them_exactly(tmp_path):
    """Version 2: the frames video, and the latents as float32 in avatar.npz."""
    avatar = synthetic_avatar()
    bundle = avatar.save(tmp_path / "bundle", "hash")
    with np.load(bundle / "avatar.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(latents=avatar.latents, masked_latents=avatar.masked_latents)
    np.savez_compressed(bundle / "avatar.npz", **arrays)
    meta = json.loads((bundle / "meta.json").read_text())
    (bundle / "meta.json").write_text(json.dumps({**meta, "version": 2}))
    assert_stored_arrays_equal(Avatar.load(bundle, "hash"), avatar, exact_latents=True)


def test_version_3_bundle_loads_its_float16_latents_as_before(tmp_path):
    """Version 3: the latents always there, as float16; version 4 only adds bundles without them."""
    avatar = synthetic_avatar()
    bundle = avatar.save(tmp_path / "bundle", "hash")
    meta = json.loads((bundle / "meta.json").read_text())
    (bundle / "meta.json").write_text(json.dumps({**meta, "version": 3}))
    assert_stored_arrays_equal(Avatar.load(bundle, "hash"), avatar)


def test_bundle_without_latents_round_trips_and_loads_them_as_none(tmp_path):
    avatar = synthetic_avatar()
    avatar.latents = avatar.masked_latents = None
    bundle = avatar.save(tmp_path / "bundle", "hash")
    with np.load(bundle / "avatar.npz") as z:
        assert not set(LATENT_ARRAYS) & set(z.files)
    loaded = Avatar.load(bundle, "hash")
    assert loaded.latents is None and loaded.masked_latents is None and not loaded.has_latents
    for name in ("transforms", "landmarks", "reference"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(avatar, name), err_msg=name)


def test_unknown_bundle_version_is_refused(tmp_path):
    bundle = synthetic_avatar(frames=1).save(tmp_path / "bundle", "hash")
    meta = json.loads((bundle / "meta.json").read_text())
    (bundle / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(InputError, match="another facecast version: prepare it again"):
        Avatar.load(bundle)


@pytest.mark.parametrize("damage", ["missing", "garbage", "short"])
def test_broken_frames_video_says_prepare_it_again(tmp_path, damage):
    avatar = synthetic_avatar()
    bundle = avatar.save(tmp_path / "bundle", "hash")
    video: Path = bundle / FRAMES_VIDEO_FILE
    if damage == "missing":
        video.unlink()
    elif damage == "garbage":
        video.write_bytes(b"\x00not a video" * 100)
    else:
        write_frames_video(video, avatar.frames[:3])  # a video of the wrong length: a half-copied bundle
    with pytest.raises(InputError, match="prepare it again"):
        Avatar.load(bundle, "hash")
