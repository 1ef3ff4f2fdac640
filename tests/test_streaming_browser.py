"""The bundled page in a real headless Chromium: it connects, video frames arrive and play, the fake microphone
talks. Skipped where Chromium (Debian's `chromium` package) or Python's playwright is not installed."""

import asyncio
import shutil
from pathlib import Path

import aioice
import pytest
from conftest import ASSETS, served, speech_like, wall_clock_engine, write_wav

from facecast.engine.avatar import prepare as avatar_mod
from facecast.export.backends.torch_backend import TorchBackend
from facecast.streaming.config import ServerConfig
from facecast.streaming.live.sources import FileSource
from facecast.streaming.web.server import PEERS, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",  # a 127.0.0.1 ICE candidate, so nothing leaves loopback
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # plain addresses, no multicast DNS lookups
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def playwright_api():
    api = pytest.importorskip("playwright.async_api", reason="playwright is not installed: pip install playwright")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium is not installed: apt-get install -y chromium")
    return api


@pytest.fixture(autouse=True)
def loopback_only(loopback_ice, monkeypatch):
    """The server offers only 127.0.0.1 (``loopback_ice``) and ignores the browser's other addresses, so ICE stays
    on loopback."""
    add = aioice.Connection.add_remote_candidate

    async def add_loopback(self, candidate):
        if candidate is None or candidate.host == "127.0.0.1":
            await add(self, candidate)

    monkeypatch.setattr(aioice.Connection, "add_remote_candidate", add_loopback)


def test_the_page_plays_the_avatar_and_sends_the_microphone(tmp_path, tiny_model, playwright_api):
    backend = TorchBackend(tiny_model)
    portrait = avatar_mod.prepare_avatar(ASSETS / "astronaut.jpg", backend.encode, backend.cfg)
    wav = write_wav(tmp_path / "talk.wav", speech_like(2.0), 16000)

    async def main():
        engine = wall_clock_engine(backend, portrait)
        app = create_app(engine, ServerConfig(port=0), sources=(FileSource(engine, wav).run,))
        async with served(app) as base, playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            try:
                page = await browser.new_page()
                await page.goto(base + "/")
                await page.click("#start")
                await page.wait_for_function("document.getElementById('video').videoWidth > 0", timeout=30_000)
                t0 = await page.evaluate("document.getElementById('video').currentTime")
                await page.wait_for_function(
                    f"document.getElementById('video').currentTime > {t0} + 0.5", timeout=30_000
                )
                await page.click("#mic")
                await page.wait_for_function(
                    "document.getElementById('mic').textContent.endsWith('on')", timeout=30_000
                )
                size = await page.evaluate("[video.videoWidth, video.videoHeight]")
                await page.wait_for_function(
                    "document.getElementById('stats').textContent.includes('browser talkers 1')", timeout=30_000
                )
                stats_text = await page.text_content("#stats")
                await page.screenshot(path=str(tmp_path / "page.png"))
                await page.click("#stop")
                for _ in range(400):  # the server notices the closed connection and cleans up
                    if not app[PEERS].pcs:
                        break
                    await asyncio.sleep(0.05)
                return size, stats_text, len(app[PEERS].pcs)
            finally:
                await browser.close()

    size, stats_text, viewers_left = asyncio.run(main())
    assert size == [512, 512]
    assert "viewers 1" in stats_text and "fps" in stats_text
    assert viewers_left == 0
