"""Every default of the live engine and the server, once, as small frozen dataclasses.

Units are in the names: ``_frames`` are 40 ms ticks of the 25 fps output clock, ``_ms`` / ``_s`` wall time.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from facecast.engine.config import ModelConfig

# `facecast livekit-worker`'s participant identity (LiveKitAvatarConfig's default too): here, so that the CLI has it
# without the livekit extra and neither LiveKit module imports the other for it.
AVATAR_IDENTITY = "facecast-avatar"


@dataclass(frozen=True)
class LiveConfig:
    steps: int = 1  # DDIM steps per frame; live uses one, the CPU budget in DESIGN.md has no room for more
    seed: int = 0
    # Output frame n is sent delay_frames = lookahead + processing_frames ticks after its audio came in: the model
    # needs `lookahead` frames of audio past n, then gets `processing_frames` ticks to render it. On the 2-core CPU
    # with onnxruntime at one step (23 ms a frame with the warp prior), 2 ticks keep all 25 new pictures a second
    # and bring p95 end-to-end from 202 to 162 ms (`facecast bench stream --processing-frames 2` vs 3, README).
    # Slower set-ups (torch, more steps) skip more pictures at 2: give them 3.
    processing_frames: int = 2
    max_late_frames: int = 0  # a frame may go out this many ticks late; one that would be later is not rendered
    # A model that falls this many blocks further behind than the render budget (processing_frames +
    # max_late_frames) drops the blocks waiting for it and starts the utterance afresh at the newest one: their
    # frames could no longer be shown, and their speech-encoder and A2L work, which no skip saves, grew the backlog
    # without bound under overload (4 Whisper sessions on 2 busy cores: 174 blocks, 7 s) and, once the load
    # dropped, kept every frame late until all of it was worked through. Not fewer than 8: a quiet machine's two
    # Whisper sessions lag 6-7 blocks for a moment when their speaker embeddings are computed, and with 2 they caught
    # up twice a run for nothing (24.5 new pictures/s each instead of 24.6). None: never (nor with wait_for_model).
    catch_up_frames: int | None = 8
    # After a catch-up, the speech encoder runs on pairs of frames (one call for two: half its work) for this many
    # blocks, and each catch-up in that time starts them again. The encoder's work is the one cost a skipped picture
    # does not save, so a machine that had to catch up once would only catch up again: two Whisper sessions while
    # two other processes held both cores made 0.8 new pictures/s each (docs/benchmarks.md, "Overload"). The first
    # frame of each pair gets its features a tick later, so one tick to render instead of two, which an overloaded
    # machine misses: a paired session shows up to 12.5 new pictures/s there. One that keeps up never pairs. 0: never.
    pair_speech_frames: int = 250
    # Run the model's speech encoder (Whisper) every this many frames instead of its own ``every_frames``: 2 halves
    # its work for a slow CPU (the shipped model's two sessions need 28 ms of every 40 ms tick on the Xeon of
    # docs/benchmarks.md, 18 ms at 2) at one frame more latency (p95 162 -> 202 ms). Up to
    # ``SpeechEncoderConfig.max_every_frames``; None: the model's own.
    speech_every_frames: int | None = None
    # numpy's BLAS threads in a process that runs live engines, set when an engine is made (process-wide, through
    # threadpoolctl; None leaves them). Its matrices here are small (Whisper's log-mel, the warp), and OpenBLAS's own
    # threads, spinning beside the model's, more than halved what a busy 2-core machine made: two Whisper sessions
    # 6.0 and 13.6 new pictures/s each with OpenBLAS's default (2), 23.0 and 24.3 with 1 (docs/benchmarks.md).
    blas_threads: int | None = 1
    # How late a source's audio may come once it plays (live/mixer.py): a block plays no sooner than this after it
    # arrived. The old 60 ms buffer counted held audio, which protected the 20 ms blocks of the microphone and of
    # WebRTC by 20-60 ms and 40 ms blocks by 40-80 ms, by the phase; 30 ms for all is more than the first's worst
    # and takes 40 ms off the latency of a 40 ms sender whose blocks come just after the ticks (docs/benchmarks.md,
    # "The jitter buffer").
    jitter_ms: int = 30
    # start() sets the first tick this soon (on a shared worker: its next tick at least this far off). Once a whole
    # frame: then an engine joining a worker ticked first up to 80 ms after start(), its talker's first two blocks
    # were waiting by then, and the older one, played first, kept that talker 40 ms later for good.
    start_slack_ms: float = 5.0
    live_backlog_ms: int = 300  # a live source (mic, browser) further ahead than this is trimmed (clock drift)
    speech_rms: float = 0.01  # a 40 ms block louder than this (about -40 dBFS) counts as speech
    hangover_frames: int = 8  # silent blocks still fed to the model after speech, so it closes the mouth itself
    fade_frames: int = 3  # cross-fade between the avatar's own frames and generated ones, in and out of speech
    speaker_seconds: float = 2.0  # speech used for the speaker embedding; 0 keeps it at zeros
    speaker_reset_s: float = 30.0  # after this much silence the next speech counts as a new talker
    probe_every_frames: int = 25  # while every frame is predicted late, render one this often to measure again
    max_burst_frames: int = 25  # a ticker further behind than this (e.g. after a suspend) jumps instead of bursting
    output_queue_frames: int = 10  # per output track; the oldest frames are dropped when nobody reads them
    log_every_s: float = 5.0  # how often falling behind is logged
    # True: the output clock waits for the model instead of skipping. Each tick first lets the model finish the
    # work of the ticks before it, and every frame is rendered and shown; when the model is slower than 25 fps the
    # stream falls behind real time (pts stay exact) rather than losing pictures. For tests and recordings on a
    # machine of unknown speed; a live viewer wants the default, which keeps the latency and skips instead.
    wait_for_model: bool = False

    def __post_init__(self) -> None:
        if self.processing_frames < 1:
            raise ValueError("processing_frames must be at least 1: rendering takes time")
        if self.steps < 1:
            raise ValueError("steps must be at least 1")
        if self.blas_threads is not None and self.blas_threads < 1:
            raise ValueError("blas_threads must be at least 1 (or None: leave numpy's BLAS as it is)")
        if self.catch_up_frames is not None and self.catch_up_frames < 0:
            raise ValueError("catch_up_frames must be at least 0 (or None: never catch up)")
        if self.pair_speech_frames < 0:
            raise ValueError("pair_speech_frames must be at least 0 (0: never pair the speech encoder's frames)")

    def model_config(self, cfg: ModelConfig) -> ModelConfig:
        """The model's config as a live engine runs it: with ``speech_every_frames`` where it is set."""
        if self.speech_every_frames is None or self.speech_every_frames == cfg.speech.every_frames:
            return cfg
        if cfg.a2l.audio_features != "whisper":
            raise ValueError("speech_every_frames is for a model whose A2L hears Whisper; this one hears log-mel")
        if not 1 <= self.speech_every_frames <= cfg.speech.max_every_frames:
            raise ValueError(
                f"speech_every_frames must be 1..{cfg.speech.max_every_frames} for this model (its encoder runs every "
                f"{cfg.speech.every_frames} frame(s)), not {self.speech_every_frames}"
            )
        return replace(cfg, speech=replace(cfg.speech, every_frames=self.speech_every_frames))

    @property
    def catch_up_backlog(self) -> int | None:
        """Blocks of the current utterance waiting for the model at which it catches up (None: never)."""
        if self.catch_up_frames is None or self.wait_for_model:
            return None
        return self.processing_frames + self.max_late_frames + self.catch_up_frames


@dataclass(frozen=True)
class PushConfig:
    max_ahead_s: float = 1.0  # a client may have at most this much audio waiting to play; more is "too fast"
    max_message_bytes: int = 1 << 20
    min_rate_hz: int = 8_000
    max_rate_hz: int = 96_000


@dataclass(frozen=True)
class SessionConfig:
    idle_timeout_s: float = 60.0  # a created session with no viewer or push client for this long ends
    reap_every_s: float = 5.0  # how often idle sessions are looked for
    max_sessions: int = 16  # created sessions at once (the server's own not counted); more get 503
    token_bytes: int = 24  # random bytes in a token (URL-safe base64: 32 characters)
    id_bytes: int = 12


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise: the page lets anyone who reaches it talk
    port: int = 8080
    # No STUN/TURN by default: a lookup of a public STUN server would stall offline, and loopback or LAN
    # viewers do not need one. aiortc itself would default to a public STUN server, so this is always passed.
    ice_servers: tuple[str, ...] = ()
    max_upload_bytes: int = 20 << 20  # POST /avatar image size
    # Load dlib's face detector and landmark predictor as soon as the server is ready (in the background, while it
    # waits for viewers: ``serve.load_face_models_for_sessions``), so the first session that brings a portrait (POST
    # /sessions or /avatar with an image) does not wait 0.4 s for them; ~80 MB, once per process (docs/benchmarks.md,
    # "Cold start").
    preload_face_landmarks: bool = True
    push: PushConfig = field(default_factory=PushConfig)
    sessions: SessionConfig = field(default_factory=SessionConfig)

    @property
    def loopback(self) -> bool:
        """Bound to this machine only; beyond it, every request needs a token (sessions.py)."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"
