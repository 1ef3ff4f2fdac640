"""Live: the asyncio engine that ticks at 25 fps (``live``, its clock, sources, mixer, speech gate, render policy
and model worker), its outputs (WebRTC and the web server, ``facecast serve``), the voice-agent integrations
(LiveKit, Pipecat) and ``benchmark/`` (``facecast bench stream``). The command line is ``facecast/cli.py``."""
