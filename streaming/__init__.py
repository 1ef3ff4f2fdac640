"""The asyncio live engine, WebRTC, the server and the command line."""
