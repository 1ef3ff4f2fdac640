"""facecast inside voice-agent frameworks: a LiveKit Agents avatar (``livekit_avatar``, ``livekit_worker``), a
Pipecat video service (``pipecat_video``), and what both share (``voice_agent``)."""
