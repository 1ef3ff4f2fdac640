"""End to end on real media from ../shared/data (skipped in a user's fresh clone, which has none)."""

import json

import pytest
from conftest import SHARED_DATA, tiny_config, write_model

from facecast.cli import main
from facecast.engine import media

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent (a user's fresh clone)")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from facecast.engine.checkpoint import DEFAULT_MODEL_DIR

    if (DEFAULT_MODEL_DIR / "l2v.safetensors").is_file():
        return DEFAULT_MODEL_DIR
    return write_model(tmp_path_factory.mktemp("m"), tiny_config())


def run_eval(model, clips, out):
    """`facecast eval` on a few frames: what these tests check is the report, not the quality."""
    return main(
        ["eval", "--model", str(model), "--clips", str(clips), "--out", str(out), "--steps", "1", "--max-frames", "30"]
    )


def test_generate_real_portrait_with_real_speech(tmp_path, model):
    speech = tmp_path / "speech.wav"
    audio = media.load_audio(SHARED_DATA / "speech" / "LJ001-0002.wav")  # 22.05 kHz LJSpeech, 1.9 s
    from conftest import write_wav

    write_wav(speech, audio, 16000)
    out = tmp_path / "out.mp4"
    portrait = SHARED_DATA / "portraits" / "obama2.jpg"
    code = main(
        ["generate", "--model", str(model), "--avatar", str(portrait), "--audio", str(speech), "--out", str(out)]
    )
    assert code == 0
    info = media.probe_video(out)
    assert info.frames == len(audio) // 640 and info.has_audio


def test_eval_on_a_real_clip_reports_all_systems(tmp_path, model):
    clip = SHARED_DATA / "clips" / "grid_lrwp9a.mpg"  # held out of the default model's training
    out = tmp_path / "report.json"
    assert run_eval(model, clip, out) == 0
    report = json.loads(out.read_text())
    assert set(report["mean"]) == {"model", "static", "oracle", "topline", "real"}
    assert report["mean"]["model"]["n_clips"] == 1
    assert (tmp_path / "report.png").is_file()
    assert 0 < report["mean"]["topline"]["ssim_face"] <= 1


def test_eval_skips_clips_without_a_face_or_audio(tmp_path, model, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "broken.mp4").write_bytes(b"nothing here")
    (clips / "grid.mpg").symlink_to(SHARED_DATA / "clips" / "grid_lrwp9a.mpg")
    out = tmp_path / "r.json"
    assert run_eval(model, clips, out) == 0
    report = json.loads(out.read_text())
    assert "broken.mp4" in report["skipped"] and report["mean"]["model"]["n_clips"] == 1
