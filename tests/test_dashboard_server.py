"""The offline visdom dashboard, tested against a real server, the real client and headless Chromium."""
import io
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
from PIL import Image

from utils.dashboard.server import (dump_dom, find_chromium, free_port, is_loopback, screenshot, start_server,
                             stop_server)
from utils.dashboard.assets import (ASSETS, ensure_static, fetch_tarballs, is_built, missing_assets,
                                 visdom_static_dir)

ROOT = Path(__file__).resolve().parents[1]
ENV = "dashboard_test"
HAS_NPM = shutil.which("npm") is not None
pytestmark = pytest.mark.skipif(not HAS_NPM and not is_built(),
                                reason="npm is not installed and visdom's static files are missing (bash .ci/node.sh)")


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


class AssetLinks(HTMLParser):
    """Collects the src of every <script> and the href of every stylesheet <link>."""

    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.links.append(attrs["src"])
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.links.append(attrs["href"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env_path = tmp_path_factory.mktemp("visdom_env")
    port = free_port()
    proc = start_server(port=port, env_path=env_path, timeout=30)
    yield {"url": f"http://127.0.0.1:{port}/", "port": port, "env_path": env_path, "proc": proc}
    stop_server(proc)


@pytest.fixture(scope="module")
def vis(server):
    import visdom
    client = visdom.Visdom(port=server["port"], use_incoming_socket=False, raise_exceptions=True)
    assert client.check_connection(timeout_seconds=5)
    return client


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(4, 3, 8, 8), dtype=np.uint8)


@pytest.fixture(scope="module")
def pushed(vis, images):
    """A line plot, a heatmap, a 2x2 image grid and a text pane in env ENV."""
    vis.line(X=np.arange(5), Y=np.arange(5) ** 2, win="loss", env=ENV, opts={"title": "loss"})
    vis.heatmap(np.arange(6).reshape(2, 3), win="confusion", env=ENV)
    vis.images(images, nrow=2, padding=2, win="samples", env=ENV)
    vis.text("epoch 3: <b>acc 0.97</b>", win="log", env=ENV)
    return vis


def window(vis, win):
    return json.loads(vis.get_window_data(win, ENV))


def test_ensure_static_is_a_fast_noop_once_built(server):
    import visdom
    start = time.perf_counter()
    static = ensure_static()
    assert time.perf_counter() - start < 0.1
    assert missing_assets(static) == []
    assert (static / "version.built").read_text().strip() == visdom.__version__


@pytest.mark.skipif(not HAS_NPM, reason="npm is not installed (bash .ci/node.sh)")
def test_ensure_static_fills_an_empty_folder_with_the_pinned_versions(tmp_path):
    static = ensure_static(verbose=False, static_dir=tmp_path / "static")
    assert missing_assets(static) == []
    assert "v3.1.1" in (static / "js/jquery.min.js").read_text()[:200]
    assert "v2.11.1" in (static / "js/plotly-plotly.min.js").read_text()[:300]
    assert "16.2.0" in (static / "js/react-react.min.js").read_text()[:200]
    stamp = (static / "js/jquery.min.js").stat().st_mtime_ns
    ensure_static(verbose=False, static_dir=static)
    assert (static / "js/jquery.min.js").stat().st_mtime_ns == stamp


def test_fetch_without_npm_raises_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="npm not found"):
        fetch_tarballs(["jquery@3.1.1"], tmp_path / "cache")


def test_every_asset_is_in_the_installed_static_folder(server):
    assert all((visdom_static_dir() / rel).stat().st_size > 0 for rel in ASSETS)


def test_page_and_every_script_and_stylesheet_answer_200(server):
    status, body = get(server["url"])
    assert status == 200
    parser = AssetLinks()
    parser.feed(body.decode())
    links = [urljoin(server["url"], link) for link in parser.links]
    assert len(links) >= 14 and any("plotly" in link for link in links) and any("MathJax" in link for link in links)
    for link in links:
        status, data = get(link)
        # the user style sheet is empty unless the user writes one
        assert status == 200 and (data or urlsplit(link).path == "/user/style.css"), link


def test_server_listens_on_127_0_0_1_only(server):
    port_hex = f"{server['port']:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if port == port_hex and state == "0A":  # 0A = LISTEN
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex, IPv4 only


def test_start_server_refuses_a_busy_port(server):
    with pytest.raises(ValueError, match="already in use"):
        start_server(port=server["port"], env_path=server["env_path"])


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_line_plot_reads_back_its_points(pushed):
    trace = window(pushed, "loss")["content"]["data"][0]
    assert trace["x"] == [0, 1, 2, 3, 4] and trace["y"] == [0, 1, 4, 9, 16]


def test_heatmap_reads_back_its_matrix(pushed):
    assert window(pushed, "confusion")["content"]["data"][0]["z"] == [[0, 1, 2], [3, 4, 5]]


def test_image_grid_holds_each_image_at_its_padded_cell(pushed, images):
    src = window(pushed, "samples")["content"]["src"]
    grid = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(src.split(",", 1)[1]))))
    cell = 8 + 2 * 2
    assert grid.shape == (2 * cell, 2 * cell, 3)
    for k in range(4):
        row, col = divmod(k, 2)
        top, left = row * cell + 1 + 2, col * cell + 1 + 2  # visdom's grid: 1 px shift plus the padding
        np.testing.assert_array_equal(grid[top:top + 8, left:left + 8], images[k].transpose(1, 2, 0))


def test_text_pane_reads_back_its_html(pushed):
    assert window(pushed, "log")["content"] == "epoch 3: <b>acc 0.97</b>"


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (bash .ci/chromium.sh installs it)")
def test_headless_chromium_renders_the_plots_offline(server, pushed, tmp_path):
    url = f"{server['url']}env/{ENV}"
    png = Image.open(screenshot(url, tmp_path / "dashboard.png")).convert("RGB")
    assert png.size == (1400, 900)
    assert len(png.getcolors(maxcolors=1 << 20)) > 50  # plots, text and colour bar, not a blank page
    dom = dump_dom(url)
    assert dom.count("js-plotly-plot") >= 2 and "main-svg" in dom and "acc 0.97" in dom
    log = (server["env_path"] / "server.log").read_text()
    # every file the page asked for was served locally: no 404, no CDN download attempt, no missing static file
    assert " 404 " not in log and "while downloading" not in log and "Could not open" not in log


def test_serve_prints_the_url_and_stops_its_server_on_ctrl_c(tmp_path):
    port = free_port()
    code = f"from utils.dashboard.server import serve; serve(port={port}, env_path={str(tmp_path)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://localhost:{port}" in line
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(OSError):
            get(f"http://127.0.0.1:{port}/")
    finally:
        stop_server(proc)
