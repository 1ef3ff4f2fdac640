"""Live: ``live/`` (the asyncio engine that ticks at 25 fps: its clock, sources, mixer, speech gate, render policy
and model worker), ``web/`` (``facecast serve``: the aiohttp server, its sessions and page, WebRTC out),
``integrations/`` (LiveKit, Pipecat, what voice agents share) and ``benchmark/`` (``facecast bench stream`` and
``facecast bench models``)."""
