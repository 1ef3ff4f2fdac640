import cv2
import numpy as np
import pytest
from conftest import ASSETS, moving_face_video, speech_like, write_wav

from facecast.cli import main
from facecast.engine import crop, media, warp
from facecast.engine.avatar import prepare as avatar_mod
from facecast.engine.batching import decode_lower_faces
from facecast.engine.config import InferenceConfig
from facecast.engine.errors import InputError
from facecast.engine.generate import generate_video, run_session
from facecast.engine.pipeline import LipSyncSession, lay_lower_face


def collect(session, audio, chunk):
    frames = []
    run_session(session, audio, frames.append, chunk_samples=chunk)
    return frames


def test_generate_writes_a_25fps_h264_aac_mp4(tmp_path, backend, portrait):
    audio = speech_like(1.3)
    out = tmp_path / "out.mp4"
    report = generate_video(backend, portrait, audio, out, InferenceConfig(steps=2))
    assert report.frames == len(audio) // 640 == 32
    info = media.probe_video(out)
    assert (info.fps, info.frames, info.has_audio) == (25.0, 32, True)
    assert (info.width, info.height) == (512, 512)
    assert abs(len(media.load_audio(out)) / 16000 - 32 / 25) < 0.1
    assert not list(tmp_path.glob("*.partial.mp4"))
    assert set(report.stage_ms) >= {"unet", "decode", "paste", "a2l", "features"}


def test_streaming_chunks_give_the_same_frames_as_one_push(backend, portrait):
    audio = speech_like(1.0, seed=3)
    spk = np.zeros(256, np.float32)
    one = collect(LipSyncSession(backend, backend.cfg, portrait, spk), audio, len(audio))
    rng = np.random.default_rng(0)
    session, chunked, i = LipSyncSession(backend, backend.cfg, portrait, spk), [], 0
    while i < len(audio):
        n = int(rng.integers(1, 1500))
        chunked += session.push_audio(audio[i : i + n])
        i += n
    chunked += session.finish()
    assert [f.index for f in chunked] == [f.index for f in one] == list(range(25))
    for a, b in zip(one, chunked, strict=True):
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2


def test_frames_wait_exactly_for_the_lookahead(backend, portrait):
    session = LipSyncSession(backend, backend.cfg, portrait, np.zeros(256, np.float32))
    look = backend.cfg.a2l.lookahead_frames
    got = session.push_audio(speech_like(0.4)[: 640 * (look + 3)])  # frames 0 .. look+2 of audio
    assert [f.index for f in got] == [0, 1, 2]


@pytest.mark.parametrize("source", ["static", "avatar"])
def test_undriven_modes_keep_the_avatar_landmarks(backend, portrait, source):
    session = LipSyncSession(backend, backend.cfg, portrait, np.zeros(256, np.float32), landmarks=source)
    frames = collect(session, speech_like(0.5), 3200)
    for f in frames:
        # A portrait's reference is its own landmarks, so both give them back unmoved.
        np.testing.assert_allclose(f.landmarks, portrait.landmarks[0], atol=1e-3)


def test_unknown_landmark_source_is_refused(backend, portrait):
    with pytest.raises(ValueError, match="landmarks must be one of"):
        LipSyncSession(backend, backend.cfg, portrait, np.zeros(256, np.float32), landmarks="dream")


def test_video_avatar_loops_ping_pong_and_bundle_round_trip(tmp_path, backend, tiny_model):
    video = moving_face_video(tmp_path / "idle.mp4", frames=6)
    av = avatar_mod.prepare_avatar(video, backend.encode, backend.cfg)
    assert av.num_frames == 6
    assert [av.index_for(n) for n in range(12)] == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1]
    bundle = av.save(tmp_path / "bundle", avatar_mod.model_hash(tiny_model))
    loaded = avatar_mod.Avatar.load(bundle, avatar_mod.model_hash(tiny_model))
    # Stored as float16 since bundle version 3, given back as float32: the latents rounded to float16, exactly.
    np.testing.assert_array_equal(loaded.latents, av.latents.astype(avatar_mod.STORED_LATENT_DTYPE).astype(np.float32))
    with pytest.raises(InputError, match="another model"):
        avatar_mod.Avatar.load(bundle, "0" * 16)
    out = tmp_path / "video_avatar.mp4"
    report = generate_video(backend, loaded, speech_like(0.8), out, InferenceConfig(steps=1))
    assert report.frames == 20 and media.probe_video(out).frames == 20


def test_an_interrupted_generate_leaves_no_finished_looking_file(tmp_path, backend, portrait):
    out = tmp_path / "out.mp4"

    def stop(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_video(backend, portrait, speech_like(1.0), out, progress=stop)
    assert not out.exists() and not list(tmp_path.glob("*.mp4"))


# ---------------------------------------------------------------------------------------------- the CLI


def run_cli(*args: str) -> int:
    return main(["generate", *args])


def test_cli_generate_end_to_end(tmp_path, tiny_model, capsys):
    wav = write_wav(tmp_path / "s.wav", speech_like(0.6, rate=44100), 44100)
    out = tmp_path / "cli.mp4"
    assert run_cli("--model", str(tiny_model), "--audio", str(wav), "--out", str(out), "--steps", "1") == 0
    assert media.probe_video(out).frames == 15
    assert '"frames": 15' in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_audio", "not found"),
        ("silent_audio", "silent"),
        ("video_without_audio", "no audio track"),
        ("no_face", "no face found"),
        ("garbage_image", "cannot read image"),
    ],
)
def test_cli_bad_inputs_fail_clearly_and_write_nothing(tmp_path, tiny_model, capsys, case, message):
    audio, avatar = tmp_path / "speech.wav", ASSETS / "astronaut.jpg"
    write_wav(audio, speech_like(0.5), 16000)
    if case == "missing_audio":
        audio = tmp_path / "nope.wav"
    elif case == "silent_audio":
        write_wav(audio, np.zeros(16000, np.float32), 16000)
    elif case == "video_without_audio":
        audio = moving_face_video(tmp_path / "silent_video.mp4", frames=3, with_audio=False)
    elif case == "no_face":
        avatar = tmp_path / "wall.png"
        cv2.imwrite(str(avatar), np.full((200, 200, 3), 90, np.uint8))
    elif case == "garbage_image":
        avatar = tmp_path / "broken.png"
        avatar.write_bytes(b"not a png")
    out = tmp_path / "out.mp4"
    code = run_cli("--model", str(tiny_model), "--audio", str(audio), "--avatar", str(avatar), "--out", str(out))
    assert code == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not out.exists() and not list(tmp_path.glob("*.partial.mp4"))


def test_cli_missing_weights_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert run_cli("--model", str(tmp_path), "--out", str(tmp_path / "x.mp4")) == 3
    assert "missing weights file" in capsys.readouterr().err


def whole_crop_composite(session, a, latent, lms, warp_prior):
    """``compose_crop`` as it was before it worked in the paste mask's bounding box: every step over the whole
    256² crop (the reference that the boxed composite must equal)."""
    cfg, av, face = session.cfg, session.avatar, session.cfg.face
    mask = session.paste_mask(a, lms)
    skin = (mask > 0.5) & (crop.mouth_mask(np.stack([av.landmarks[a], lms]), face) < 0.01)
    lower = lay_lower_face(cfg, av.crops[a], decode_lower_faces(session.backend, latent, session.row)[0], session.row)
    lower = crop.match_colours(lower, av.crops[a], skin, contrast=not warp_prior)
    if not warp_prior:
        return crop.blend(av.crops[a], lower, mask)
    src = int(session.warp_sources[a])
    top = max(0, cfg.l2v.mask_top_px - face.feather_px)
    warped = warp.warp_face(av.crops[src], av.landmarks[src], lms, top_row=top)
    warped = crop.match_colours(warped, av.crops[a], skin, contrast=face.warp_colour_contrast)
    interior = warp.interior_mask(lms, face.crop_px, face.interior_grow_px, face.interior_feather_px)
    needed = session.interior_needed(src, lms)
    return crop.composite(av.crops[a], [(warped, mask), (lower, mask * interior * needed)])


@pytest.mark.parametrize("warp_prior", [True, False])
def test_the_composite_in_the_mask_box_equals_the_whole_crop_one(backend, portrait, warp_prior):
    session = LipSyncSession(backend, backend.cfg, portrait, np.zeros(256, np.float32), landmarks="static")
    rng = np.random.default_rng(4)
    for opening_px in (0.0, 4.0, 9.0, 15.0):
        lms = portrait.landmarks[0].copy()
        lms[48:68] += rng.normal(0, 1.5, (20, 2)).astype(np.float32)
        lms[[56, 57, 58, 65, 66, 67], 1] += opening_px  # lower lip down
        lms[5:12, 1] += opening_px / 2  # and the chin with it
        latent = rng.standard_normal((1, *portrait.latents.shape[1:])).astype(np.float32)
        got, mask = session.compose_crop(0, latent, lms, warp_prior=warp_prior)
        want = whole_crop_composite(session, 0, latent, lms, warp_prior)
        np.testing.assert_array_equal(got, want)
        assert np.abs(got.astype(int) - portrait.crops[0]).max() > 10  # the mouth was really redrawn
