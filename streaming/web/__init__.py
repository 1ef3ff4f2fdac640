"""``facecast serve``: the aiohttp server (``server``, ``serve``), its independent sessions (``sessions``), the page
(``static/``) and the frames going out to the browser over WebRTC (``webrtc``)."""
