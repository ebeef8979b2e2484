"""Smoke test: `landscape app` served on localhost and loaded in Debian's headless Chromium (driven over the
DevTools protocol by choreographer, which kaleido brings), with a screenshot that must show the plots drawn."""

import asyncio
import base64
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from surface_fixtures import bowl, write_surface

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); CI installs it"
)
WINDOW = (1400, 1000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """`landscape app` on a free port over two 21 x 21 demo surfaces; yields its URL."""
    grid = np.linspace(-1, 1, 21)
    write_surface(tmp_path / "resnet56.h5", bowl(grid, grid), x=grid, y=grid)
    steep = {k: 3 * v if k.endswith("_loss") else v for k, v in bowl(grid, grid).items()}
    write_surface(tmp_path / "resnet56_noshort.h5", steep, x=grid, y=grid, arch="resnet56_noshort")
    port = _free_port()
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "landscape.cli", "app", "--results", str(tmp_path), "--port", str(port), "--headless"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://localhost:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start: {(tmp_path / 'app.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """End the app: the `landscape app` process and the Streamlit server it started (its process group)."""
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)


async def _screenshot(url: str, plots: int, timeout: float = 60) -> tuple[bytes, dict]:
    """Load `url`, wait until `plots` plotly figures are drawn, return a PNG of the window and page facts."""
    import choreographer

    async with choreographer.Browser(path=CHROMIUM, headless=True) as browser:
        tab = browser.get_tab()
        await tab.send_command(
            "Emulation.setDeviceMetricsOverride",
            params={"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
        )
        await tab.send_command("Page.navigate", params={"url": url})
        probe = (
            "({plots: document.querySelectorAll('.js-plotly-plot .main-svg').length / 2, "
            "webgl: document.querySelectorAll('.js-plotly-plot canvas').length, "
            "errors: document.querySelectorAll('[data-testid=stException], [data-testid=stAlert]').length})"
        )
        deadline = time.monotonic() + timeout
        facts: dict = {}
        while time.monotonic() < deadline:
            reply = await tab.send_command("Runtime.evaluate", params={"expression": probe, "returnByValue": True})
            facts = reply["result"]["result"].get("value", {})
            if facts.get("plots", 0) >= plots:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.5)  # let WebGL finish the 3D surfaces
        shot = await tab.send_command("Page.captureScreenshot", params={"format": "png"})
        return base64.b64decode(shot["result"]["data"]), facts


def test_the_app_shows_two_surfaces_side_by_side_in_a_real_browser(served, tmp_path):
    from PIL import Image

    png, facts = asyncio.run(_screenshot(f"{served}/?file=resnet56.h5&other=resnet56_noshort.h5", plots=3))
    (tmp_path / "screenshot.png").write_bytes(png)
    assert facts["plots"] >= 3 and facts["errors"] == 0, facts
    assert facts["webgl"] >= 1  # the 3D figure has its canvas
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert image.shape == (WINDOW[1], WINDOW[0], 3)
    main = image[:, 320:]  # right of the sidebar
    colourful = (main.max(axis=2) - main.min(axis=2)) > 50  # viridis colours; the page itself is white and grey
    assert colourful.mean() > 0.02, f"plot area looks blank ({colourful.mean():.2%} coloured), see {tmp_path}"
    columns = np.flatnonzero(colourful.sum(axis=0) > 20) + 320
    assert columns.max() - columns.min() > WINDOW[0] / 2  # coloured on both sides: two surfaces side by side
