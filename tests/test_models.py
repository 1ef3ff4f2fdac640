import dataclasses

import torch
from conftest import tiny_config

from facecast.engine import checkpoint
from facecast.engine.errors import WeightsError
from facecast.engine.models.a2l import N_DRIVEN


def test_autoencoder_shapes_and_lower_face_decode():
    cfg = tiny_config()
    codec = checkpoint.build("autoencoder", cfg).eval()
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        z = codec.encode(x)
        assert z.shape == (2, cfg.autoencoder.latent_channels, 32, 32)
        # Decoding only the lower rows of the latent gives only the lower rows of the image.
        assert codec.decode(z[:, :, 13:]).shape == (2, 3, 19 * 8, 256)
        assert codec.decode(z).abs().max() <= 1.0


def test_a2l_shapes_and_streaming_state():
    cfg = tiny_config()
    a2l = checkpoint.build("a2l", cfg).eval()
    mel = torch.randn(1, 20, 320)
    spk, ref = torch.randn(1, 256), torch.rand(1, 68, 2) * 256
    with torch.no_grad():
        whole, _ = a2l(mel, spk, ref, a2l.initial_state())
        assert whole.shape == (1, 20, N_DRIVEN, 2)
        # Feeding the same frames in pieces with the state carried gives the same output.
        state, parts = a2l.initial_state(), []
        for piece in (mel[:, :7], mel[:, 7:8], mel[:, 8:]):
            out, state = a2l(piece, spk, ref, state)
            parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-5, atol=1e-5)


def test_a2l_is_causal():
    cfg = tiny_config()
    a2l = checkpoint.build("a2l", cfg).eval()
    mel = torch.randn(1, 20, 320)
    later = mel.clone()
    later[:, 12:] = torch.randn(1, 8, 320)
    spk, ref = torch.randn(1, 256), torch.rand(1, 68, 2) * 256
    with torch.no_grad():
        a, _ = a2l(mel, spk, ref, a2l.initial_state())
        b, _ = a2l(later, spk, ref, a2l.initial_state())
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_l2v_predicts_a_latent_and_uses_its_conditions():
    cfg = tiny_config()
    l2v = checkpoint.build("l2v", cfg).eval()
    c = cfg.autoencoder.latent_channels
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(1, c, 32, 32, generator=g) for _ in range(4)]
    heat = torch.rand(1, 3, 32, 32, generator=g)
    driven = torch.rand(1, N_DRIVEN, 2, generator=g) * 256
    mel = torch.randn(1, 5, 320, generator=g)
    t = torch.tensor([999])
    with torch.no_grad():
        out = l2v(*z[:1], t, *z[1:], heat, driven, mel)
        assert out.shape == (1, c, 32, 32)
        moved = l2v(*z[:1], t, *z[1:], heat, driven + 10, mel)
        assert not torch.allclose(out, moved)  # landmark tokens reach the output
        # The pose prior goes through a 1-channel bottleneck (paper 001).
        assert l2v.bottleneck.out_channels == cfg.l2v.prior_channels == 1


def test_checkpoint_round_trip_and_errors(tmp_path):
    cfg = tiny_config()
    cfg.save(tmp_path / "config.json")
    a2l = checkpoint.build("a2l", cfg)
    checkpoint.save_part(a2l, tmp_path, "a2l")
    loaded = checkpoint.load_part(tmp_path, "a2l")
    for k, v in a2l.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    try:
        checkpoint.load_part(tmp_path, "l2v")
    except WeightsError as e:
        assert "missing weights file" in str(e) and "facecast train l2v" in str(e)
    else:
        raise AssertionError("a missing weights file must raise WeightsError")
    # Weights that do not match the config are refused with the config's name in the message.
    other = tiny_config().__class__()  # the full-size default config
    other.save(tmp_path / "config.json")
    try:
        checkpoint.load_part(tmp_path, "a2l")
    except WeightsError as e:
        assert "does not match" in str(e)
    else:
        raise AssertionError("mismatched weights must raise WeightsError")


def test_a2l_ensemble_averages_independent_members():
    cfg = tiny_config()
    assert cfg.a2l.members > 1
    a2l = checkpoint.build("a2l", cfg).eval()
    mel, spk, ref = torch.randn(2, 6, 320), torch.randn(2, 256), torch.rand(2, 68, 2) * 256
    with torch.no_grad():
        members, state = a2l.member_outputs(mel, spk, ref, a2l.initial_state(2))
        mean, state2 = a2l(mel, spk, ref, a2l.initial_state(2))
        split = a2l.split_member_outputs(
            mel.repeat(cfg.a2l.members, 1, 1), spk.repeat(cfg.a2l.members, 1), ref.repeat(cfg.a2l.members, 1, 1)
        )
    assert members.shape == (cfg.a2l.members, 2, 6, N_DRIVEN, 2)
    assert state.shape == (cfg.a2l.layers, 2, cfg.a2l.state_width)
    torch.testing.assert_close(mean, members.mean(0) * cfg.a2l.motion_gain)
    torch.testing.assert_close(state, state2)
    assert not torch.allclose(members[0], members[1])  # initialised independently
    # Training: member i sees only part i of the batch; with every part the same batch, it matches member i.
    torch.testing.assert_close(split, members, rtol=1e-5, atol=1e-5)


def test_a_model_folder_from_before_ensembles_still_loads(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    cfg = dataclasses.replace(tiny_config(), a2l=dataclasses.replace(tiny_config().a2l, members=1))
    a2l = checkpoint.build("a2l", cfg).eval()
    # The old layout: no "members" key in config.json, tensors named without the "members.0." prefix.
    saved = cfg.to_dict()
    del saved["a2l"]["members"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    checkpoint.save_part(a2l, tmp_path, "a2l")
    old = {k.removeprefix("members.0."): v for k, v in load_file(str(tmp_path / "a2l.safetensors")).items()}
    save_file(old, str(tmp_path / "a2l.safetensors"))
    loaded = checkpoint.load_part(tmp_path, "a2l")
    assert loaded.cfg.members == 1 and loaded.cfg.state_width == cfg.a2l.hidden
    mel, spk, ref = torch.randn(1, 5, 320), torch.randn(1, 256), torch.rand(1, 68, 2) * 256
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(mel, spk, ref, loaded.initial_state())[0], a2l(mel, spk, ref, a2l.initial_state())[0]
        )
