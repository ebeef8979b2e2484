"""`landscape app` served on localhost and driven in Debian's headless Chromium (over the DevTools protocol, by
choreographer, which kaleido brings): the one-surface page at two window widths, of a random-plane surface and of one
on PCA directions with its training path, where no element may overlap another (checked from the DOM boxes) and a
screenshot is kept in the test's tmp folder; a rotated 3D view that survives a change of setting; two 3D views that
turn together; a zoomed 1D slice, kept across a setting but not across the log scale; new and finished files noticed
without a reload; no request leaving localhost, not even for a results folder and a URL whose text is Markdown of
outside images; and the `landscape app` process itself: it serves without a prompt and SIGTERM stops its server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from surface_fixtures import bowl, write_surface

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); CI installs it"
)
GRID = np.linspace(-1, 1, 21)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _serve(folder: Path, log: Path, *extra: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`landscape app` on a free port in a session of its own; its URL once it answers."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "landscape.cli", "app", "--results", str(folder), "--port", str(port), *extra],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 90
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"the app did not start: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    return proc, url


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
            return reply.read() == b"ok"
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """End the app: the `landscape app` process and the Streamlit server it started (its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    if not _group_gone(proc.pid, 10):
        os.killpg(proc.pid, signal.SIGKILL)


def _group_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    write_surface(root / "resnet56.h5", bowl(GRID, GRID), x=GRID, y=GRID)
    steep = {k: 3 * v if k.endswith("_loss") else v for k, v in bowl(GRID, GRID).items()}
    write_surface(root / "resnet56_noshort.h5", steep, x=GRID, y=GRID, arch="resnet56_noshort")
    path = np.array([[0.9, 0.6], [0.6, -0.5], [0.2, -0.3], [0.05, -0.05], [0.0, 0.0]])
    trajectory = {  # a surface on PCA directions, with its training path: long axis titles and the path layer
        "coordinates": path,
        "epochs": np.arange(2, 12, 2),
        "residual": np.linspace(0.3, 0.0, 5),
        "distance": np.linspace(1.2, 0.0, 5),
        "explained_variance_ratio": np.array([0.607, 0.212]),
    }
    write_surface(root / "pca.h5", bowl(GRID, GRID), x=GRID, y=GRID, arch="resnet20", trajectory=trajectory)
    return root


@pytest.fixture(scope="module")
def served(folder) -> Iterator[str]:
    proc, url = _serve(folder, folder.parent / "app.log", "--headless")
    try:
        yield url
    finally:
        _stop(proc)


class Page:
    """A tab of the headless browser: evaluate JavaScript, wait for a condition, click, drag, screenshot."""

    def __init__(self, tab):
        self.tab = tab
        self.requests: list[str] = []

    async def js(self, expression: str):
        reply = await self.tab.send_command(
            "Runtime.evaluate", params={"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        return reply["result"].get("result", {}).get("value")

    async def until(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.3)
        raise AssertionError(f"page never satisfied: {expression[:200]}")

    async def mouse(self, kind: str, x: float, y: float, **extra) -> None:
        await self.tab.send_command("Input.dispatchMouseEvent", params={"type": kind, "x": x, "y": y, **extra})

    async def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            await self.mouse(kind, x, y, button="left", clickCount=1)

    async def drag(self, x: float, y: float, dx: float, dy: float) -> None:
        await self.mouse("mouseMoved", x, y)
        await self.mouse("mousePressed", x, y, button="left", clickCount=1)
        for k in range(1, 11):
            await self.mouse("mouseMoved", x + dx * k / 10, y + dy * k / 10, button="left", buttons=1)
            await asyncio.sleep(0.03)
        await self.mouse("mouseReleased", x + dx, y + dy, button="left", clickCount=1)

    async def screenshot(self) -> bytes:
        shot = await self.tab.send_command("Page.captureScreenshot", params={"format": "png"})
        return base64.b64decode(shot["result"]["data"])


def _in_browser(url: str, size: tuple[int, int], script) -> object:
    """Open `url` in a window of `size` (width, height) and run `await script(page)`."""
    import choreographer

    async def main():
        async with choreographer.Browser(path=CHROMIUM, headless=True) as browser:
            page = Page(browser.get_tab())

            async def record(event):
                page.requests.append(event["params"]["request"]["url"])

            page.tab.subscribe("Network.requestWillBeSent", record)
            await page.tab.send_command("Network.enable")
            await page.tab.send_command(
                "Emulation.setDeviceMetricsOverride",
                params={"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
            )
            await page.tab.send_command("Page.navigate", params={"url": url})
            return await script(page)

    return asyncio.run(main())


PLOTS_DRAWN = "document.querySelectorAll('.js-plotly-plot .main-svg').length / 2 >= {n}"
# The boxes of the page's leaf elements in the main area (Streamlit's element containers holding no other one),
# of each chart and of the colour bars drawn inside each chart.
BOXES = """(() => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const main = document.querySelector('[data-testid="stMainBlockContainer"]');
  const leaves = [...main.querySelectorAll('[data-testid="stElementContainer"]')]
    .filter(e => !e.querySelector('[data-testid="stElementContainer"]') && !e.closest('.st-key-view_keeper'))
    .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; })
    .filter(e => e.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}) && !e.closest('details:not([open])'))
    .map(e => ({box: box(e), what: (e.className.match(/st-key-\\S+/) || [e.firstElementChild?.dataset.testid])[0]}));
  const charts = [...main.querySelectorAll('.stPlotlyChart')].map(c => ({
    box: box(c), key: c.closest('[class*="st-key-"]')?.className.match(/st-key-\\S+/)[0],
    bars: [...c.querySelectorAll('.colorbar')].map(box),
  }));
  return JSON.stringify({main: box(main), width: window.innerWidth, leaves, charts});
})()"""


def _overlap(a: list[float], b: list[float]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


@pytest.mark.parametrize("name", ["resnet56.h5", "pca.h5"])
@pytest.mark.parametrize("size", [(1400, 1000), (800, 1000)])
def test_the_one_surface_page_lays_out_without_overlaps(served, tmp_path, size, name):
    async def look(page: Page):
        await page.until(PLOTS_DRAWN.format(n=4))
        await asyncio.sleep(2)  # WebGL and the last layout pass
        facts = json.loads(await page.js(BOXES))
        facts["webgl"] = await page.js("document.querySelectorAll('.js-plotly-plot canvas').length")
        facts["errors"] = await page.js("document.querySelectorAll('[data-testid=stException]').length")
        return facts, await page.screenshot(), page.requests

    facts, png, requests = _in_browser(f"{served}/?file={name}", size, look)
    shot = tmp_path / f"one_surface_{name[:-3]}_{size[0]}px.png"  # kept for CI to upload
    shot.write_bytes(png)
    assert facts["errors"] == 0 and facts["webgl"] >= 1
    leaves = facts["leaves"]
    for i, a in enumerate(leaves):
        for b in leaves[i + 1 :]:
            assert _overlap(a["box"], b["box"]) < 1, f"{a['what']} overlaps {b['what']} at {size[0]} px, see {shot}"
    main_left, _, main_right, _ = facts["main"]
    charts = {c["key"]: c for c in facts["charts"]}
    assert list(charts) == ["st-key-chart_3D-surface", "st-key-chart_Contour-lines", "st-key-chart_Heat-map"] + [
        "st-key-chart_slice"
    ]
    for chart in charts.values():
        left, _, right, _ = chart["box"]
        assert left >= main_left - 1 and right <= min(main_right, facts["width"]) + 1, f"cut off: {chart['key']}"
        for bar in chart["bars"]:  # colour bars stay inside their own plot
            assert bar[0] >= left - 1 and bar[2] <= right + 1, f"colour bar out of {chart['key']}"
    surface, contour, heat = (charts[f"st-key-chart_{k}"]["box"] for k in ("3D-surface", "Contour-lines", "Heat-map"))
    content = max(c["box"][2] for c in charts.values()) - min(c["box"][0] for c in charts.values())
    assert surface[2] - surface[0] >= 0.95 * content  # the 3D view has a row of its own, the whole width
    if size[0] > 1100:
        assert contour[1] == pytest.approx(heat[1], abs=1) and heat[0] >= contour[2] - 1  # side by side
    else:
        assert heat[1] >= contour[3] - 1 and heat[0] == pytest.approx(contour[0], abs=1)  # stacked
    assert requests and not _outside(requests)  # no usage statistics, no fonts or scripts from the network
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    x0, y0, x1, y1 = (round(v) for v in surface)
    region = image[max(y0, 0) : min(y1, size[1]), x0:x1]
    colourful = (region.max(axis=2) - region.min(axis=2)) > 50  # viridis on a white and grey page
    assert colourful.mean() > 0.03, f"the 3D view looks blank, see {shot}"


CAMERAS = """JSON.stringify([...document.querySelectorAll('.js-plotly-plot')]
  .filter(g => g._fullLayout && g._fullLayout.scene).map(g => g._fullLayout.scene.camera.eye))"""
LOG_TICKS = """(() => {
  const g = [...document.querySelectorAll('.js-plotly-plot')].filter(g => g._fullLayout && g._fullLayout.scene);
  return g.length === 2 && g.every(x => (x.layout.scene.zaxis.ticktext || []).includes('0.1'));
})()"""


def test_a_turned_3d_view_survives_a_setting_and_turns_its_twin(served, tmp_path):
    async def turn(page: Page):
        await page.until(PLOTS_DRAWN.format(n=6))
        await asyncio.sleep(2)
        before = json.loads(await page.js(CAMERAS))
        box = json.loads(
            await page.js("JSON.stringify(document.querySelector('.js-plotly-plot').getBoundingClientRect())")
        )
        await page.drag(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, 150, 40)
        await asyncio.sleep(1.5)
        turned = json.loads(await page.js(CAMERAS))
        label = json.loads(
            await page.js(
                "JSON.stringify([...document.querySelectorAll('label')]"
                ".find(l => l.innerText.trim() === 'Log scale').getBoundingClientRect())"
            )
        )
        await page.click(label["x"] + 10, label["y"] + label["height"] / 2)
        await page.until(LOG_TICKS)
        await asyncio.sleep(2)
        after = json.loads(await page.js(CAMERAS))
        (tmp_path / "turned.png").write_bytes(await page.screenshot())
        return before, turned, after

    before, turned, after = _in_browser(f"{served}/?file=resnet56.h5&other=resnet56_noshort.h5", (1400, 1000), turn)
    assert len(before) == len(turned) == len(after) == 2
    assert turned[0] != pytest.approx(before[0], abs=1e-3)  # the drag turned the first view
    assert turned[1] == pytest.approx(turned[0], abs=1e-6)  # and its twin with it
    assert after[0] == pytest.approx(turned[0], abs=1e-6) and after[1] == pytest.approx(turned[0], abs=1e-6)


SLICE_Y = "document.querySelector('.st-key-chart_slice .js-plotly-plot')._fullLayout.yaxis"
SLICE_AXIS = f"(a => JSON.stringify({{type: a.type, autorange: a.autorange, range: a.range}}))({SLICE_Y})"
CHECK = "[...document.querySelectorAll('label')].find(l => l.innerText.trim() === '{}').querySelector('input').click()"


def test_a_zoomed_1d_slice_is_kept_across_a_setting_but_not_across_the_log_scale(served):
    """A slice zoomed in along the loss axis went blank after Log scale: the range of the linear axis was put back on
    the log one."""

    async def zoom(page: Page):
        await page.until(PLOTS_DRAWN.format(n=4))
        await page.js("document.querySelector('.st-key-chart_slice').scrollIntoView({block: 'center'})")
        await asyncio.sleep(2)
        area = json.loads(
            await page.js(
                "(g => { const r = g.getBoundingClientRect(), s = g._fullLayout._size;"
                " return JSON.stringify({x: r.left + s.l + s.w / 2, y: r.top + s.t, h: s.h}); })"
                "(document.querySelector('.st-key-chart_slice .js-plotly-plot'))"
            )
        )
        await page.drag(area["x"], area["y"] + 0.2 * area["h"], 0, 0.4 * area["h"])  # along the loss axis only
        await page.until(f"!{SLICE_Y}.autorange")
        await asyncio.sleep(1)
        zoomed = json.loads(await page.js(SLICE_AXIS))
        await page.js(CHECK.format("Mark θ* (the centre)"))  # the chart is drawn anew, in the same units
        await page.until("!document.querySelector('.st-key-chart_slice .js-plotly-plot').layout.shapes?.length")
        await asyncio.sleep(2)
        kept = json.loads(await page.js(SLICE_AXIS))
        await page.js(CHECK.format("Log scale"))
        await page.until(f"{SLICE_Y}.type === 'log'")
        await asyncio.sleep(2)
        return zoomed, kept, json.loads(await page.js(SLICE_AXIS))

    zoomed, kept, logged = _in_browser(f"{served}/?file=resnet56.h5", (1400, 1000), zoom)
    assert zoomed["type"] == "linear" and 0.1 < zoomed["range"][0] < zoomed["range"][1] < 2.2  # zoomed in
    assert kept == zoomed
    assert logged["autorange"] is True  # the whole curves: train loss 0.1 to 1.1 and test loss 0.2 to 2.2
    assert logged["range"][0] < np.log10(0.1) and logged["range"][1] > np.log10(2.2)


def test_a_setting_inside_the_view_reaches_the_url(served):
    """The slice's widgets rerun only their fragment, and the URL kept the old slice (a bookmark lost it)."""

    async def pick(page: Page):
        await page.until(PLOTS_DRAWN.format(n=4))
        await page.js(  # below the fold: a click by the element, not by coordinates
            "[...document.querySelectorAll('label')].find(l => l.innerText.trim() === 'a column (α fixed)').click()"
        )
        return await page.until("location.search.includes('slice=y') && location.search", timeout=30)

    assert "slice=y" in _in_browser(f"{served}/?file=resnet56.h5", (1400, 1000), pick)


EVIL_IMAGE = "![x](http://evil.example/x.png)"
EVIL = f"{EVIL_IMAGE} <img src=http://evil.example/y.png> [a](http://evil.example) :red[red] :material/home: $x^2$"
EVIL_NAME = "![z](http:evil.example/z.png).h5"  # 'http:host/x' is 'http://host/x' to a browser
IMAGES = "JSON.stringify([...document.images].map(i => i.src))"


def _outside(urls: list[str]) -> list[str]:
    """The URLs that leave localhost."""
    leaving = [u for u in urls if urllib.parse.urlsplit(u).scheme in ("http", "https", "ws", "wss")]
    return [u for u in leaving if urllib.parse.urlsplit(u).hostname not in ("localhost", "127.0.0.1")]


def test_markdown_in_files_and_the_url_fetches_nothing(tmp_path):
    """A spec whose model is Markdown of an outside image (and HTML, a link, a colour, an icon, math), a file whose
    path is such an image and a `?file=` naming one: the page shows them as text and asks nothing of the network."""
    folder = tmp_path / "results"
    folder.mkdir()
    write_surface(folder / "evil.h5", bowl(GRID, GRID), x=GRID, y=GRID, arch=EVIL)
    (folder / EVIL_NAME.split("/")[0]).mkdir()
    write_surface(folder / EVIL_NAME, bowl(GRID, GRID), x=GRID, y=GRID, arch=EVIL)
    proc, url = _serve(folder, tmp_path / "app.log", "--headless")

    async def look(page: Page):
        await page.until(PLOTS_DRAWN.format(n=4))
        await page.until("document.body.innerText.includes('is not a file in the results folder')")
        await asyncio.sleep(2)
        text = (await page.js("document.body.innerText")).replace("\u2060", "")  # word joiners break URLs
        images = json.loads(await page.js(IMAGES))
        links = json.loads(await page.js("JSON.stringify([...document.links].map(a => a.href))"))
        return text, images, links, page.requests

    query = urllib.parse.urlencode({"file": EVIL_IMAGE})
    try:
        text, images, links, requests = _in_browser(f"{url}/?{query}", (1400, 1000), look)
    finally:
        _stop(proc)
    assert f"'{EVIL_IMAGE}' is not a file in the results folder" in text  # the URL's text, as text
    assert EVIL_NAME in text and f"model {EVIL}" in text  # the file's name and its model, as text
    assert not _outside(images) and not _outside(links)
    assert requests and not _outside(requests)


TABLE = "[...document.querySelectorAll('[data-testid=stDataFrame] [role=gridcell]')].map(e => e.innerText)"


def test_new_files_and_finished_runs_show_without_a_reload(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    computed = np.zeros((len(GRID), len(GRID)), dtype=bool)
    computed[:5] = True
    write_surface(folder / "running.h5", bowl(GRID, GRID), x=GRID, y=GRID, computed=computed)
    proc, url = _serve(folder, tmp_path / "app.log", "--headless")

    async def follow(page: Page):
        await page.until(PLOTS_DRAWN.format(n=4))
        await page.until(f"{TABLE}.includes('23.8% (105/441)')")
        write_surface(folder / "late.h5", bowl(GRID, GRID), x=GRID, y=GRID)  # a new file
        done = write_surface(tmp_path / "done.h5", bowl(GRID, GRID), x=GRID, y=GRID)
        os.replace(done, folder / "running.h5")  # the run finishes
        await page.until(f"{TABLE}.includes('late.h5')")
        await page.until(f"{TABLE}.filter(t => t === '100.0% (441/441)').length === 2")
        await page.until("document.body.innerText.includes('completion 100.0% (441/441)')")  # the shown caption
        return await page.js("performance.getEntriesByType('navigation').length")

    try:
        navigations = _in_browser(f"{url}/?file=running.h5", (1400, 1000), follow)
    finally:
        _stop(proc)
    assert navigations == 1  # one page load: no reload


def test_landscape_app_serves_without_a_prompt_and_sigterm_stops_its_server(tmp_path, folder):
    """No --headless, a home that never ran Streamlit (whose first run asks for an e-mail), stdin closed, no
    display: it serves anyway. SIGTERM to `landscape app` alone stops the Streamlit server too."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["HOME"] = str(home)
    log = tmp_path / "app.log"
    proc, url = _serve(folder, log, "--open", env=env)
    try:
        assert "Email" not in log.read_text()
        assert not (home / ".streamlit" / "credentials.toml").exists()
        proc.send_signal(signal.SIGTERM)  # to `landscape app` only, not to its group
        assert proc.wait(timeout=30) == 0
        assert _group_gone(proc.pid, 20), "Streamlit is still running after SIGTERM to landscape app"
        assert not _healthy(url)
        assert "no display to open a browser on" in log.read_text()
    finally:
        _stop(proc)
