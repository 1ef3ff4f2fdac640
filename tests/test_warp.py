"""The warp prior: landmarks land where they are told, pixels outside stay put, and the interior mask."""

import cv2
import numpy as np

from facecast.engine import warp
from facecast.engine.landmarks import INNER_LIP


def face_like_landmarks() -> np.ndarray:
    """A synthetic, roughly face-shaped set of 68 points in a 256² crop (mouth closed)."""
    rng = np.random.default_rng(0)
    lms = np.zeros((68, 2), np.float32)
    t = np.linspace(-1, 1, 17)
    lms[0:17] = np.stack([128 + 90 * t, 120 + 110 * np.sqrt(1 - 0.8 * t**2)], 1)  # jaw
    lms[17:27] = np.stack([np.linspace(60, 196, 10), np.full(10, 70)], 1)  # brows
    lms[27:36] = np.stack([np.full(9, 128) + np.linspace(-20, 20, 9), np.linspace(90, 128, 9)], 1)  # nose
    lms[36:48] = np.stack([np.tile(np.linspace(80, 176, 6), 2), np.full(12, 84)], 1)  # eyes
    a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    lms[48:60] = np.stack([128 + 30 * np.cos(a), 172 + 10 * np.sin(a)], 1)  # outer lip
    b = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    lms[60:68] = np.stack([128 + 20 * np.cos(b), 172 + 0.5 * np.sin(b)], 1)  # inner lip, nearly closed
    return lms + rng.normal(0, 0.3, lms.shape).astype(np.float32)


def textured_image(size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(1)
    img = cv2.resize(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    return img


def test_warp_to_the_same_landmarks_is_the_identity():
    img, lms = textured_image(), face_like_landmarks()
    np.testing.assert_array_equal(warp.warp_face(img, lms, lms), img)


def test_a_moved_point_carries_its_pixel_and_far_pixels_stay():
    img, src = textured_image(), face_like_landmarks()
    dst = src.copy()
    dst[57] += [0, 12]  # lower lip centre moves down 12 px
    dst[8] += [0, 10]  # and the chin
    out = warp.warp_face(img, src, dst, top_row=100)
    x, y = np.round(dst[57]).astype(int)
    sx, sy = np.round(src[57]).astype(int)
    assert np.abs(out[y, x].astype(int) - img[sy, sx].astype(int)).max() <= 12
    # The upper rows are copied, and pixels far from every moved point do not change.
    np.testing.assert_array_equal(out[:100], img[:100])
    np.testing.assert_array_equal(out[105:115, 5:20], img[105:115, 5:20])
    assert np.abs(out.astype(int) - img.astype(int)).max() > 20  # something did move


def test_interior_mask_covers_an_open_mouth_and_nothing_far_from_it():
    lms = face_like_landmarks()
    lms[61:64, 1] -= 8
    lms[65:68, 1] += 8
    mask = warp.interior_mask(lms, 256, grow_px=1, feather_px=1.5)
    assert mask.shape == (256, 256) and mask.dtype == np.float32
    cx, cy = np.round(lms[INNER_LIP].mean(0)).astype(int)
    assert mask[cy, cx] > 0.99
    assert mask[:140].max() == 0 and mask[200:].max() == 0


def test_most_closed_frame_picks_the_smallest_lip_gap():
    closed = face_like_landmarks()
    opened = closed.copy()
    opened[65:68, 1] += 10
    frames = np.stack([opened, closed, opened])
    assert warp.most_closed_frame(frames) == 1
    assert warp.lip_gap(opened) > warp.lip_gap(closed) + 5


def test_a_box_of_the_warp_is_the_same_pixels_as_the_whole_warp():
    img, src = textured_image(), face_like_landmarks()
    dst = src.copy()
    dst[56:59, 1] += 9  # lower lip down
    dst[65:68, 1] += 9
    whole = warp.warp_face(img, src, dst, top_row=100)
    for box in [(slice(120, 210), slice(60, 200)), (slice(100, 256), slice(0, 256)), (slice(150, 151), slice(7, 9))]:
        np.testing.assert_array_equal(warp.warp_face(img, src, dst, top_row=100, box=box), whole[box])


def lit_frames(brightness: list[int], open_mouth: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Crops lit at each level (uint8 (T, 256, 256, 3)) and landmarks with the given mouths open or closed."""
    crops = np.stack([np.clip(textured_image().astype(int) // 2 + b, 0, 255).astype(np.uint8) for b in brightness])
    lms = np.stack([face_like_landmarks() for _ in brightness])
    for t, is_open in enumerate(open_mouth):
        if is_open:
            lms[t, 65:68, 1] += 10
    return crops, lms


def test_pick_sources_takes_the_closed_mouth_lit_like_the_frame_and_never_the_same_moment():
    # Frames 0-19 dim, 20-39 bright; closed mouths only at 2, 8 (dim) and 30, 36 (bright).
    brightness = [10] * 20 + [120] * 20
    closed = {2, 8, 30, 36}
    crops, lms = lit_frames(brightness, [t not in closed for t in range(40)])
    choice = warp.pick_sources(crops, lms, upper_rows=100, candidates=4, min_gap_frames=3, switch_cost=0.0)
    assert choice.shape == (40,)
    assert set(choice[:20]) <= {2, 8} and set(choice[20:]) <= {30, 36}  # lit like the frame
    assert np.all(np.abs(choice - np.arange(40)) >= 3)  # never from the same moment
    assert choice[2] == 8 and choice[30] == 36


def test_pick_sources_falls_back_to_the_most_closed_mouth_and_a_portrait_warps_itself():
    crops, lms = lit_frames([10, 10, 10], [True, False, True])
    options = dict(upper_rows=100, min_gap_frames=5, switch_cost=0.0)
    assert list(warp.pick_sources(crops, lms, candidates=2, **options)) == [1, 1, 1]
    assert list(warp.pick_sources(crops[:1], lms[:1], candidates=8, **options)) == [0]


def test_pick_sources_does_not_flicker_between_sources_that_look_almost_alike():
    # Two closed mouths, far apart in time; the frames between alternate slightly in light, which alone would
    # flip the source every frame.
    brightness = [60] + [60 + 2 * (t % 2) for t in range(1, 39)] + [61]
    closed = {0, 39}
    crops, lms = lit_frames(brightness, [t not in closed for t in range(40)])
    free = warp.pick_sources(crops, lms, upper_rows=100, candidates=2, min_gap_frames=3, switch_cost=0.0)
    steady = warp.pick_sources(crops, lms, upper_rows=100, candidates=2, min_gap_frames=3, switch_cost=40.0)
    switches = lambda c: int(np.sum(c[1:] != c[:-1]))  # noqa: E731
    assert switches(free) > 10
    assert switches(steady) <= 2  # at most: away from 0 while it is too near, and away from 39 near the end
    assert np.all(np.abs(steady - np.arange(40)) >= 3)


def test_an_avatar_picks_its_warp_sources_once_and_a_copy_picks_its_own():
    import dataclasses

    from facecast.engine.avatar.prepare import Avatar
    from facecast.engine.config import ModelConfig

    crops, lms = lit_frames([10] * 20 + [120] * 20, [t not in {2, 8, 30, 36} for t in range(40)])
    t = len(crops)
    avatar = Avatar(
        frames=crops,
        transforms=np.zeros((t, 2, 3)),
        crops=crops,
        landmarks=lms,
        latents=np.zeros((t, 8, 32, 32), np.float32),
        masked_latents=np.zeros((t, 8, 32, 32), np.float32),
        reference=lms[0],
    )
    cfg = ModelConfig()
    first = avatar.warp_sources(cfg)
    assert first.shape == (t,) and avatar.warp_sources(cfg) is first  # cached
    face = cfg.face
    expected = warp.pick_sources(
        crops,
        lms,
        cfg.l2v.mask_top_px - face.feather_px,
        face.warp_source_candidates,
        face.warp_source_min_gap_frames,
        face.warp_source_switch_cost,
    )
    np.testing.assert_array_equal(first, expected)
    single = dataclasses.replace(cfg, face=dataclasses.replace(cfg.face, warp_source_candidates=1))
    assert list(avatar.warp_sources(single)) == [avatar.identity_index] * t
    portrait = dataclasses.replace(avatar, frames=crops[:1], crops=crops[:1], landmarks=lms[:1])
    assert list(portrait.warp_sources(cfg)) == [0]  # its own sources, not the video's
