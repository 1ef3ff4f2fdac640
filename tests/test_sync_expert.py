"""The sync expert: it learns sync from a planted cue, finds a planted shift, and its offset sign is the metrics'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facecast.engine.evaluation import metrics
from facecast.engine.evaluation.sync_expert import (
    MARGIN_PX,
    MOUTH_H,
    MOUTH_W,
    SyncExpert,
    SyncExpertConfig,
    SyncExpertScorer,
    mouth_strips,
    save_expert,
)
from facecast.engine.evaluation.syncnet import offset_distances, sync_scores
from facecast.engine.training.train_sync import ContrastiveObjective, SyncClip, SyncTrainConfig, sync_batch

TINY = SyncExpertConfig(audio_dim=8, embed_dim=16, video_channels=(8, 16), audio_hidden=16)


def synthetic_clip(rng: np.random.Generator, frames: int = 120) -> tuple[SyncClip, np.ndarray]:
    """A mouth whose brightness follows an 'audio' signal frame by frame; returns the clip and that signal (T,)."""
    signal = rng.standard_normal(frames).astype(np.float32)
    h, w = MOUTH_H + 2 * MARGIN_PX, MOUTH_W + 2 * MARGIN_PX
    strips = np.full((frames, h, w), 100.0, np.float32) + rng.normal(0, 4, (frames, h, w))
    strips[:, h // 3 : 2 * h // 3, w // 4 : 3 * w // 4] += 40 * signal[:, None, None]  # the 'open mouth'
    features = signal[:, None] * np.linspace(0.5, 1.5, TINY.audio_dim, dtype=np.float32)
    features = features + rng.normal(0, 0.1, features.shape).astype(np.float32)
    clip = SyncClip("synthetic", np.clip(strips, 0, 255).astype(np.uint8), features, np.arange(frames - 4))
    return clip, signal


def delay(features: np.ndarray, frames: int) -> np.ndarray:
    """The audio ``frames`` later: video frame t now matches audio t + frames (mouth leads: offset -frames)."""
    return np.concatenate([np.zeros((frames, features.shape[1]), features.dtype), features[:-frames]])


@pytest.fixture(scope="module")
def trained() -> tuple[SyncExpertScorer, list[SyncClip]]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    clips = [synthetic_clip(rng)[0] for _ in range(6)]
    scfg = SyncTrainConfig(clips_per_batch=4, windows_per_clip=4)
    model = SyncExpert(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    objective = ContrastiveObjective(scfg.temperature)
    for step in range(150):
        loss = objective(model, sync_batch(clips, scfg, rng), None, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return SyncExpertScorer(model.eval()), clips


def centre(clip: SyncClip) -> np.ndarray:
    return clip.strips[:, MARGIN_PX : MARGIN_PX + MOUTH_H, MARGIN_PX : MARGIN_PX + MOUTH_W]


def test_expert_finds_aligned_and_shifted_audio(trained: tuple[SyncExpertScorer, list[SyncClip]]) -> None:
    scorer, _ = trained
    clip, _ = synthetic_clip(np.random.default_rng(123))  # a clip the expert never saw
    aligned = scorer.score_strips(centre(clip), clip.features)
    assert aligned["offset_frames"] == 0
    shifted = scorer.score_strips(centre(clip), delay(clip.features, 4))
    assert shifted["offset_frames"] == -4
    other, _ = synthetic_clip(np.random.default_rng(7))
    swapped = scorer.score_strips(centre(clip), other.features)
    assert swapped["confidence"] < 0.5 * aligned["confidence"]


def test_untrained_expert_is_not_in_sync() -> None:
    """The test above can fail: without training the planted cue is not found."""
    torch.manual_seed(1)
    clip, _ = synthetic_clip(np.random.default_rng(123))
    scorer = SyncExpertScorer(SyncExpert(TINY).eval())
    trained_like = [scorer.score_strips(centre(clip), delay(clip.features, k))["offset_frames"] for k in (3, 6)]
    assert trained_like != [-3, -6]


def test_offset_sign_matches_sync_correlation() -> None:
    """Mouth lagging the audio by k frames: LSE's offset and metrics.sync_correlation's both say +k."""
    rng = np.random.default_rng(0)
    k, n = 3, 80
    series = rng.standard_normal(n + k)
    opening, envelope = series[:n], series[k:]  # envelope[t] = opening[t + k]: the mouth shows it k frames later
    _, corr_offset, _ = metrics.sync_correlation(opening, envelope, max_offset_frames=5)
    assert corr_offset == k
    # The same timing with embeddings: one random unit code per moment of speech.
    codes = torch.nn.functional.normalize(torch.randn(n + k, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    video_emb = codes[:n]  # frame t shows what audio frame t - k said
    audio_emb = codes[k : n + k]
    lse = sync_scores(offset_distances(video_emb, audio_emb, vshift=5), vshift=5)
    assert lse["offset_frames"] == k


def test_mouth_strips_follow_the_mouth_and_round_trip(tmp_path) -> None:
    crops = np.zeros((2, 256, 256, 3), np.uint8)
    crops[:, 170:180, 120:140] = 255  # a bright 'mouth' around (130, 175)
    lms = np.tile(np.array([130.0, 175.0]), (2, 68, 1))
    strips = mouth_strips(crops, lms)
    assert strips.shape == (2, MOUTH_H, MOUTH_W)
    assert strips[0, MOUTH_H // 2, MOUTH_W // 2] == 255 and strips[0, 0, 0] == 0
    net = SyncExpert(TINY)
    save_expert(net, tmp_path, {"note": "test"})
    loaded = SyncExpertScorer.from_dir(tmp_path)
    assert loaded.net.cfg == TINY
    assert torch.equal(loaded.net.state_dict()["video.0.weight"], net.state_dict()["video.0.weight"])
