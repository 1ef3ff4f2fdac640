"""Files that ship inside the facecast package: a portrait and a speech clip, the defaults of every command that
needs an avatar or speech (the bundled model is ``checkpoint.DEFAULT_MODEL_DIR``)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_AVATAR = ASSETS / "astronaut.jpg"
DEFAULT_SPEECH = ASSETS / "speech.wav"
