from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facecast.engine import checkpoint
from facecast.engine.bundled import ASSETS  # noqa: F401 - the tests import it from here
from facecast.engine.config import A2LConfig, AutoencoderConfig, L2VConfig, ModelConfig
from facecast.engine.landmarks import DRIVEN, interocular
from facecast.engine.mouth_prior import MOUTH_PRIOR_FILE, MouthPrior

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(1)  # tests share 2 cores with whatever else runs; small models don't need more


def tiny_config() -> ModelConfig:
    """A model small enough that a forward pass is instant; same code paths as the real one."""
    return dataclasses.replace(
        ModelConfig(),
        autoencoder=AutoencoderConfig(encoder_channels=8, decoder_channels=8, decoder_blocks=(1, 1, 1, 1)),
        a2l=A2LConfig(hidden=16, layers=1, speaker_hidden=8, dropout=0.0),
        l2v=L2VConfig(block_out_channels=(8, 16, 16), cross_attention_dim=16, attention_head_dim=4),
    )


def write_model(folder: Path, cfg: ModelConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg.save(folder / "config.json")
    for part in checkpoint.PARTS:
        checkpoint.save_part(checkpoint.build(part, cfg), folder, part)
    return folder


@pytest.fixture(scope="session", autouse=True)
def landmark_model_cache(tmp_path_factory: pytest.TempPathFactory):
    """dlib's landmark model is converted into a folder of this test session (once, under a second), never into the
    user's cache; subprocesses the tests start inherit the variable."""
    from facecast.engine.avatar.shape_predictor import CACHE_DIR_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_DIR_ENV, str(tmp_path_factory.mktemp("facecast_cache")))
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("tiny_model"), tiny_config())


@pytest.fixture(scope="session")
def backend(tiny_model: Path):
    """The torch backend on the tiny model (a test module may override ``backend`` with its own)."""
    from facecast.export.backends.torch_backend import TorchBackend

    return TorchBackend(tiny_model)


@pytest.fixture(scope="session")
def portrait(backend):
    """The bundled portrait prepared as a one-frame avatar for the tiny model."""
    from facecast.engine.avatar.prepare import prepare_avatar

    return prepare_avatar(ASSETS / "astronaut.jpg", backend.encode, backend.cfg)


def speech_like(seconds: float, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """A voiced buzz with a syllable-rate envelope: enough structure for features, A2L and sync tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    buzz = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / rate) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2
    return (0.3 * buzz * envelope + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    import wave

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def needs_shared() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent (a user's fresh clone)")


def moving_face_video(path: Path, frames: int = 12, with_audio: bool = True) -> Path:
    import cv2

    from facecast.engine import media

    img = np.ascontiguousarray(media.load_image(ASSETS / "astronaut.jpg")[0:320, 80:400])  # the face, unscaled
    w = media.Mp4Writer(path, 320, 320, with_audio=with_audio)
    for i in range(frames):
        w.write(cv2.warpAffine(img, np.float32([[1, 0, i % 4], [0, 1, 0]]), (320, 320)))
    w.close(speech_like(frames / 25) if with_audio else None)
    return path


# Bound on any single wait in the tests on the real clock (sockets, WebRTC, Pipecat, LiveKit): only a hang gets near
# it, however busy the machine. It is never what a test asserts: what was awaited is checked afterwards.
WAIT_S = 60.0


def wall_clock_engine(backend, portrait, **config):
    """A LiveEngine on the real clock, for the tests over real sockets and frameworks. It waits for its model
    (``LiveConfig.wait_for_model``), so no test depends on this machine keeping up with 25 fps: when other work
    holds the cores, its stream slows down instead of skipping pictures. ``speaker_seconds=0`` leaves the speaker
    encoder out, unless a test asks for it."""
    from facecast.streaming.config import LiveConfig
    from facecast.streaming.live.engine import LiveEngine

    live = LiveConfig(**{"speaker_seconds": 0, "wait_for_model": True, **config})
    return LiveEngine(backend, portrait, live)


@pytest.fixture
def loopback_ice():
    """ICE candidates on 127.0.0.1 only: aioice leaves loopback out by default, and tests must not use the other
    addresses of this machine. The same patch ``facecast bench stream`` runs under."""
    from facecast.streaming.benchmark.measured_run import loopback_ice as loopback_only

    with loopback_only():
        yield


async def until(condition, what: str, wait_s: float = WAIT_S, poll_s: float = 0.02) -> None:
    """Poll ``condition()`` until true. The bound only keeps a broken component from hanging the run."""
    import asyncio
    import time

    deadline = time.monotonic() + wait_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll_s)


@contextlib.asynccontextmanager
async def served(app):
    """Serve an aiohttp app on a free port of 127.0.0.1; yields its base URL (no trailing slash)."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------------------ a model with a mouth prior

LOWER_INNER = [65, 66, 67]


def opened(lms: np.ndarray, px: float) -> np.ndarray:
    """``lms`` (68, 2) with the lower inner lip (and the lower outer lip, jaw) moved down ``px`` pixels."""
    out = lms.astype(np.float32).copy()
    out[[*LOWER_INNER, 55, 56, 57, 58, 59, *range(5, 12)], 1] += px
    return out


def dark_prior(rest_offset: np.ndarray, level: float = 0.1) -> MouthPrior:
    """A prior whose interior is a flat ``level`` x skin in every bin."""
    return MouthPrior(
        rest_offset=rest_offset.astype(np.float32),
        rest_opening=0.0,
        mean_opening=0.1,
        rest_quantile=0.1,
        textures=np.full((2, 2, 8, 16, 3), level, np.float32),
        depth=0.1,
        openings=np.array([0.05, 0.15], np.float32),
        counts=np.array([10, 10]),
        skin=np.array([1.2, 0.9, 0.8], np.float32),
    )


def opening_offset(reference: np.ndarray, opening_io: float) -> np.ndarray:
    """A rest offset (37, 2) in interocular units that opens ``reference``'s mouth by ``opening_io``."""
    offset = np.zeros((len(DRIVEN), 2), np.float32)
    moved = opened(reference, opening_io * float(interocular(reference))) - reference
    return offset + moved[DRIVEN] / float(interocular(reference))


@pytest.fixture(scope="session")
def backend_with_prior(tiny_model, portrait, tmp_path_factory):
    """The tiny model plus a prior that opens a still mouth by 0.1 interocular and paints a dark inside."""
    from facecast.export.backends.torch_backend import TorchBackend

    folder = tmp_path_factory.mktemp("with_prior")
    shutil.copytree(tiny_model, folder, dirs_exist_ok=True)
    dark_prior(opening_offset(portrait.landmarks[0], 0.1)).save(folder / MOUTH_PRIOR_FILE)
    return TorchBackend(folder)
