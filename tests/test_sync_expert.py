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
    normalise_windows,
    save_expert,
)
from facecast.engine.evaluation.syncnet import offset_distances, sync_scores
from facecast.engine.training.train_sync import (
    ContrastiveObjective,
    KeepBest,
    SyncClip,
    SyncTrainConfig,
    load_sync_config,
    loop_config,
    separation,
    sync_batch,
)

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


# ---------------------------------------------------------------------------------------------- regularisation


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    video = torch.from_numpy(rng.integers(0, 256, (4, 5, MOUTH_H, MOUTH_W), dtype=np.uint8))
    audio = torch.from_numpy(rng.standard_normal((4, 5, TINY.audio_dim)).astype(np.float32))
    for field in ("audio_dropout", "feature_dropout"):
        net = SyncExpert(SyncExpertConfig(**{**TINY.__dict__, field: 0.5})).train()
        embed = net.embed_audio if field == "audio_dropout" else net.embed_video
        x = audio if field == "audio_dropout" else video
        assert not torch.allclose(embed(x), embed(x)), field  # a new mask each call
        net.eval()
        assert torch.equal(embed(x), embed(x)), field
    plain = SyncExpert(TINY).train()  # without dropout training mode is deterministic (BatchNorm on a fixed batch)
    assert torch.equal(plain.embed_audio(audio), plain.embed_audio(audio))


def test_photometric_jitter_survives_normalisation() -> None:
    clip, _ = synthetic_clip(np.random.default_rng(0))
    plain = SyncTrainConfig(clips_per_batch=1, windows_per_clip=4)
    jittered = SyncTrainConfig(clips_per_batch=1, windows_per_clip=4, brightness_jitter=0.05, contrast_jitter=0.2)
    a = sync_batch([clip], plain, np.random.default_rng(3))
    b = sync_batch([clip], jittered, np.random.default_rng(3))
    assert torch.equal(a["audio"], b["audio"])  # the same windows, flips and boxes were drawn
    diff = (normalise_windows(a["video"]) - normalise_windows(b["video"])).abs().mean()
    assert diff > 0.02  # per-frame changes are not undone by the per-window normalisation
    unaugmented = sync_batch([clip], jittered, np.random.default_rng(3), augment=False)
    assert unaugmented["video"].dtype == torch.uint8  # validation batches are not jittered


def test_keep_best_keeps_the_lowest_select_loss(tmp_path) -> None:
    rng = np.random.default_rng(0)
    clips = [synthetic_clip(rng)[0] for _ in range(3)]
    scfg = SyncTrainConfig(clips_per_batch=3, windows_per_clip=4)
    batches = [sync_batch(clips, scfg, rng, augment=False)]
    model = SyncExpert(TINY).eval()
    keep = KeepBest(ContrastiveObjective(scfg.temperature), batches, [], tmp_path)
    assert np.isfinite(keep(model, 0)["select_loss"])  # the real loss, on the fixed batches
    losses_seen = {100: 3.0, 200: 2.0, 300: 2.5}
    losses = iter(losses_seen.values())
    keep.mean_loss = lambda model, batches: next(losses)  # then the losses three log steps see
    for step in (100, 200, 300):
        with torch.no_grad():
            model.video[0].weight.fill_(step)
        assert keep(model, step) == {"select_loss": losses_seen[step]}
    assert keep.best_step == 200 and keep.best_score == 2.0
    assert float(keep.state["video.0.weight"][0, 0, 0, 0]) == 200.0
    assert (tmp_path / "best.safetensors").is_file()


def test_regularised_config_reaches_the_optimizer(tmp_path) -> None:
    path = tmp_path / "sync.json"
    path.write_text('{"weight_decay": 0.05, "select_clips": ["a", "b"], "expert": {"feature_dropout": 0.2}}')
    scfg = load_sync_config(path)
    assert scfg.select_clips == ("a", "b") and scfg.expert.feature_dropout == 0.2 and scfg.expert.embed_dim == 128
    assert loop_config(scfg).weight_decay == 0.05
    assert load_sync_config(None) == SyncTrainConfig()


def test_separation_rises_with_training(trained: tuple[SyncExpertScorer, list[SyncClip]]) -> None:
    """select_by="separation" picks by real minus swapped-audio confidence: high for a trained expert, ~0 without."""
    scorer, clips = trained
    torch.manual_seed(1)
    assert separation(scorer.net, clips) > 0.1 > abs(separation(SyncExpert(TINY).eval(), clips))
