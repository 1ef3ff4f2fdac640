import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import moving_face_video, tiny_config
from safetensors.torch import load_file

from facecast.engine import checkpoint
from facecast.engine.errors import FacecastError
from facecast.engine.training.dataset import load_clips, pack_dataset, prepare_dataset
from facecast.engine.training.train import train, warp_mel_axis


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for i in range(2):
        moving_face_video(root / f"speaker{i}.mp4", frames=30)
    (root / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path_factory.mktemp("dataset")
    report = prepare_dataset(root, out, tiny_config())
    assert "skipped" in report["broken"]  # one bad clip is reported, the others still prepared
    return out


def run_config(tmp_path, steps, **train):
    path = tmp_path / f"run{steps}.json"
    train = {"steps": steps, "batch": 2, "warmup_steps": 1, "log_every": 1, "save_every": 1, "holdout": [], **train}
    parts = {"autoencoder": {"patch_px": 64}, "a2l": {"sequence_frames": 10}}
    path.write_text(json.dumps({"model": tiny_config().to_dict(), "train": train, **parts}))
    return path


def test_prepared_dataset_layout(dataset):
    clips = load_clips(dataset)
    assert [c.name for c in clips] == ["speaker0", "speaker1"]
    c = clips[0]
    assert c.crops.shape == (30, 256, 256, 3) and c.landmarks.shape == (30, 68, 2)
    assert len(c.audio) == 30 * 640 and c.speaker.shape == (256,)


def test_train_all_parts_resume_and_load(dataset, tmp_path):
    model = tmp_path / "model"
    for part in checkpoint.PARTS:
        summary = train(part, dataset, model, run_config(tmp_path, 2))
        assert summary["steps"] == 2 and np.isfinite(summary["history"][-1]["loss"])
        # Resuming continues from the saved step instead of starting over.
        summary = train(part, dataset, model, run_config(tmp_path, 3))
        assert summary["steps"] == 3 and [h["step"] for h in summary["history"]] == [1, 2, 3]
        assert checkpoint.load_part(model, part) is not None
    cfg = checkpoint.load_config(model)
    assert cfg.autoencoder.latent_scale != 1.0  # measured on the data after training the autoencoder
    saved = json.loads((model / "runs" / "l2v" / "train_config.json").read_text())
    assert saved["train"]["steps"] == 3 and saved["model"]["l2v"]["block_out_channels"] == [8, 16, 16]


def test_training_is_seeded(dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        train("a2l", dataset, folder, run_config(tmp_path, 2, seed=7))
    wa, wb = load_file(str(a / "a2l.safetensors")), load_file(str(b / "a2l.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_holding_out_every_clip_is_an_error(dataset, tmp_path):
    with pytest.raises(FacecastError, match="held out"):
        train("a2l", dataset, tmp_path / "m", run_config(tmp_path, 1, holdout=["speaker0", "speaker1"]))


def test_a_pack_reads_back_as_the_same_clips_and_trains(dataset, tmp_path):
    pack = tmp_path / "pack"
    written = pack_dataset(dataset, pack, skip=("speaker1",), max_frames=20)
    assert written == {"speaker0": 20}
    (packed,) = load_clips(pack)
    (original,) = load_clips(dataset, ["speaker0"])
    assert packed.crops.shape == (20, 256, 256, 3) and packed.landmarks.shape == (20, 68, 2)
    np.testing.assert_array_equal(packed.landmarks, original.landmarks[:20])
    # H.264 is lossy, but close: about 40 dB PSNR on real faces.
    err = packed.crops.astype(float) - original.crops[:20].astype(float)
    assert 10 * np.log10(255**2 / np.mean(err**2)) > 30
    assert np.abs(packed.audio - original.audio[: 20 * 640]).max() < 1e-4  # 16-bit audio
    model = tmp_path / "model"
    train("autoencoder", dataset, model, run_config(tmp_path, 1))
    summary = train("l2v", pack, model, run_config(tmp_path, 2, mouth_loss_weight=4.0), device="cpu")
    assert summary["steps"] == 2 and np.isfinite(summary["history"][-1]["loss"])


def test_a2l_motion_gain_is_measured_and_applied(dataset, tmp_path):
    model = tmp_path / "model"
    train("a2l", dataset, model, run_config(tmp_path, 2))
    cfg = checkpoint.load_config(model)
    assert cfg.a2l.motion_gain > 0 and cfg.a2l.motion_gain != 1.0
    a2l = checkpoint.load_part(model, "a2l")
    mel, spk, ref = torch.randn(1, 5, 320), torch.randn(1, 256), torch.full((1, 68, 2), 128.0)
    scaled, _ = a2l(mel, spk, ref, a2l.initial_state(1))
    a2l.cfg = dataclasses.replace(cfg.a2l, motion_gain=1.0)
    plain, _ = a2l(mel, spk, ref, a2l.initial_state(1))
    torch.testing.assert_close(scaled, plain * cfg.a2l.motion_gain)


def test_motion_target_scales_the_measured_gain(dataset, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train("a2l", dataset, full, run_config(tmp_path, 2))
    train("a2l", dataset, part, run_config(tmp_path, 2, motion_target=0.5))
    g_full, g_part = (checkpoint.load_config(m).a2l.motion_gain for m in (full, part))
    assert g_part == pytest.approx(0.5 * g_full, abs=2e-3)  # same seed, same network: only the target differs


def test_warping_the_mel_axis_moves_energy_up_or_down():
    n_mels, k = 80, 4
    mel = np.zeros((3, k * n_mels), np.float32)
    mel.reshape(3, k, n_mels)[..., 30] = 1.0  # one band lit in every sub-frame
    assert warp_mel_axis(mel, 1.0, n_mels) is mel
    up = warp_mel_axis(mel, 1.2, n_mels).reshape(3, k, n_mels)
    down = warp_mel_axis(mel, 0.8, n_mels).reshape(3, k, n_mels)
    centre = np.arange(n_mels)
    assert (up * centre).sum(-1).max() / up.sum(-1).max() == pytest.approx(36.0, abs=0.5)
    assert (down * centre).sum(-1).max() / down.sum(-1).max() == pytest.approx(24.0, abs=0.5)
    assert up.shape == down.shape == (3, k, n_mels)
