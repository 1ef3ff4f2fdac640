"""The model that ships in the repository: loads, is small, and moves the mouth with speech, not silence."""

import numpy as np
import pytest
from conftest import ASSETS

from facecast.engine import media
from facecast.engine.avatar import prepare as avatar_mod
from facecast.engine.checkpoint import BUNDLED_MODELS, DEFAULT_MODEL_DIR, PARTS, load_config, model_folder
from facecast.engine.config import InferenceConfig
from facecast.engine.evaluation import metrics
from facecast.engine.generate import run_session
from facecast.engine.pipeline import LipSyncSession
from facecast.engine.speaker import speaker_embedding
from facecast.export.backends.torch_backend import TorchBackend

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "l2v.safetensors").is_file(), reason="no bundled model in engine/weights/default"
)


@pytest.fixture(scope="module")
def backend():
    return TorchBackend(DEFAULT_MODEL_DIR)


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_bundled_models_are_complete_and_small(name):
    folder = BUNDLED_MODELS[name]
    files = [folder / f"{p}.safetensors" for p in PARTS] + [folder / "config.json"]
    assert all(f.is_file() for f in files)
    shipped = [f for f in folder.iterdir() if f.is_file()]  # the speech encoder and mouth prior too
    assert sum(f.stat().st_size for f in shipped) < 50 * 2**20
    assert (folder / "MODEL_CARD.md").is_file()
    assert model_folder(name) == folder  # `--model logmel` finds it


def test_the_logmel_model_differs_from_the_default_only_in_its_a2l():
    """It is the fallback for a slow CPU: the same face, lips driven without the speech encoder."""
    default, logmel = (load_config(BUNDLED_MODELS[n]) for n in ("default", "logmel"))
    assert default.a2l.audio_features == "whisper" and logmel.a2l.audio_features == "logmel"
    assert (default.autoencoder, default.l2v, default.face) == (logmel.autoencoder, logmel.l2v, logmel.face)
    for part in ("autoencoder", "l2v", "mouth"):
        same = (BUNDLED_MODELS[n] / f"{part}.safetensors" for n in ("default", "logmel"))
        assert len({f.read_bytes() for f in same}) == 1


def test_mouth_moves_with_speech_and_rests_in_silence(backend):
    av = avatar_mod.prepare_avatar(ASSETS / "astronaut.jpg", backend.encode, backend.cfg)
    speech = media.load_audio(ASSETS / "speech.wav")[: 16000 * 3]
    silence = np.zeros_like(speech) + 1e-4 * np.random.default_rng(0).standard_normal(len(speech)).astype(np.float32)
    openings = {}
    for name, audio in (("speech", speech), ("silence", silence)):
        session = LipSyncSession(backend, backend.cfg, av, speaker_embedding(speech), InferenceConfig(steps=1))
        frames = []
        run_session(session, audio, frames.append)
        openings[name] = metrics.mouth_opening(np.stack([f.landmarks for f in frames]))
    assert openings["speech"].std() > 2 * openings["silence"].std()
    assert openings["speech"].max() > openings["silence"].max()
