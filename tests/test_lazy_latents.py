"""An avatar's latents exist only where a session runs L2V (issue 22): an avatar prepared for a model whose frames
show no L2V picture (the shipped model: its mouth prior paints the mouth) carries none, and a session that runs L2V
gets them encoded, once, when it meets such an avatar. Frames are the same either way."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading

import numpy as np
import pytest
from conftest import ASSETS, speech_like

from facecast.engine.avatar.prepare import (
    BUNDLE_VERSION,
    LATENT_ARRAYS,
    Avatar,
    load_avatar,
    needs_latents,
    prepare_avatar,
)
from facecast.engine.config import InferenceConfig
from facecast.engine.pipeline import LipSyncSession

SPEAKER = np.ones(256, np.float32) / 16


@pytest.fixture(scope="module")
def lean_bundle(backend_with_prior, tmp_path_factory):
    """The bundled portrait, prepared and saved for the prior model: no latents."""
    avatar = load_avatar(ASSETS / "astronaut.jpg", backend_with_prior)
    return avatar.save(tmp_path_factory.mktemp("lean") / "bundle", backend_with_prior.autoencoder_hash)


def frames_of(backend, avatar, cfg=None) -> np.ndarray:
    session = LipSyncSession(backend, cfg or backend.cfg, avatar, SPEAKER, InferenceConfig(steps=1))
    audio = speech_like(0.6)
    frames = session.push_audio(audio) + session.finish()
    assert len(frames) == 15
    return np.stack([f.image for f in frames])


def test_a_model_without_l2v_prepares_no_latents_and_shows_the_same_frames(backend_with_prior, lean_bundle, portrait):
    assert not needs_latents(backend_with_prior.cfg, backend_with_prior.mouth_prior)
    lean = load_avatar(ASSETS / "astronaut.jpg", backend_with_prior)
    assert lean.latents is None and lean.masked_latents is None and not lean.has_latents
    with np.load(lean_bundle / "avatar.npz") as z:
        assert not set(LATENT_ARRAYS) & set(z.files)
    assert json.loads((lean_bundle / "meta.json").read_text())["version"] == BUNDLE_VERSION == 4
    loaded = load_avatar(lean_bundle, backend_with_prior)
    assert loaded.latents is None and loaded.masked_latents is None  # nothing encoded at load either
    eager = prepare_avatar(ASSETS / "astronaut.jpg", backend_with_prior.encode, backend_with_prior.cfg)
    assert eager.has_latents
    want = frames_of(backend_with_prior, eager)
    np.testing.assert_array_equal(frames_of(backend_with_prior, lean), want)
    np.testing.assert_array_equal(frames_of(backend_with_prior, loaded), want)
    assert loaded.latents is None  # the session did not encode them either


def test_a_bundle_without_latents_gets_them_encoded_at_load_for_a_model_with_l2v(
    backend, lean_bundle, portrait, caplog
):
    """The tiny model (no mouth prior) runs L2V: the lean bundle's latents are encoded at load, as prepare encodes
    them (the portrait's crop is stored losslessly, so exactly), and its frames are the eager avatar's."""
    assert needs_latents(backend.cfg, backend.mouth_prior)
    with caplog.at_level(logging.INFO, logger="facecast.engine.avatar.prepare"):
        avatar = load_avatar(lean_bundle, backend)
    assert "has no latents" in caplog.text and "encoding its 1 frame(s) now" in caplog.text
    for name in LATENT_ARRAYS:
        got, want = getattr(avatar, name), getattr(portrait, name)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=name)
    np.testing.assert_array_equal(frames_of(backend, avatar), frames_of(backend, portrait))


def test_a_session_that_runs_l2v_encodes_a_lean_avatars_latents_itself(backend_with_prior, portrait):
    """A session whose own config shows L2V (``interior_source="l2v"``) on the prior model, given an avatar that
    ``load_avatar`` prepared without latents: it encodes them, and its frames are those of the eager avatar."""
    cfg = dataclasses.replace(
        backend_with_prior.cfg, face=dataclasses.replace(backend_with_prior.cfg.face, interior_source="l2v")
    )
    lean = load_avatar(ASSETS / "astronaut.jpg", backend_with_prior)
    assert lean.latents is None
    got = frames_of(backend_with_prior, lean, cfg)
    np.testing.assert_array_equal(lean.latents, portrait.latents)
    np.testing.assert_array_equal(got, frames_of(backend_with_prior, portrait, cfg))


def test_latents_are_encoded_once_however_many_threads_ask(backend, portrait):
    calls = []

    def encode(images):
        calls.append(len(images))
        return backend.encode(images)

    lean = dataclasses.replace(portrait, latents=None, masked_latents=None)
    threads = [threading.Thread(target=lean.ensure_latents, args=(encode, backend.cfg)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1, 1]  # the crop and the masked crop, once
    np.testing.assert_array_equal(lean.masked_latents, portrait.masked_latents)


def test_an_avatar_with_latents_keeps_them_on_any_model(backend_with_prior, portrait, tmp_path):
    """Bundles made before (with latents) load as they were, on a model without L2V too."""
    bundle = portrait.save(tmp_path / "bundle", backend_with_prior.autoencoder_hash)
    loaded = Avatar.load(bundle, backend_with_prior.autoencoder_hash)
    assert loaded.has_latents
    assert load_avatar(bundle, backend_with_prior).has_latents
