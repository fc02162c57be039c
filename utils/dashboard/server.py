"""Start, stop and photograph the visdom dashboard server, fully offline.

    python main.py dashboard --port=8097        # blocking: prints the URL, Ctrl-C stops it
    python benchmarks/dashboard_screenshot.py --env=main --out=dashboard.png
"""
import ipaddress
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from config import UserError
from utils.dashboard.assets import ensure_static

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def is_loopback(host):
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host="127.0.0.1"):
    """A TCP port that is free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _page_answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(log_path, lines=5):
    try:
        return " | ".join(Path(log_path).read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "no log"


def start_server(port=8097, host="127.0.0.1", env_path=".visdom", wait=True, timeout=30):
    """Launch `python -m visdom.server` in the background and return its Popen.

    Loopback hosts bind to 127.0.0.1 only; any other host binds every interface
    (visdom has no per-address flag). Output goes to <env_path>/server.log.
    With `wait`, returns once the page answers 200, else raises RuntimeError.
    """
    if not isinstance(port, int) or not 0 < port < 65536:
        raise UserError(f"port must be an integer in 1..65535, got {port!r}")
    if _port_in_use(port):
        raise UserError(f"port {port} is already in use: stop the other server or pick another --port")
    ensure_static()
    env_path = Path(env_path).expanduser().resolve()
    env_path.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "visdom.server", "-port", str(port), "-env_path", str(env_path),
           # WARNING level: INFO logs every request, and a long training run would grow the log without end
           "-logging_level", "WARNING"]
    if is_loopback(host):
        cmd.append("-bind_local")
    else:
        print(f"warning: visdom binds every interface for host {host!r} and has no login: "
              f"anyone who can reach port {port} can read and change the dashboard", file=sys.stderr)
    log_path = env_path / "server.log"
    # a file, not a pipe: nobody reads the pipe, and a full pipe would freeze the server
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if wait:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + timeout
        while not _page_answers(url):
            if proc.poll() is not None:
                raise RuntimeError(f"visdom server exited with code {proc.returncode}: {_log_tail(log_path)}")
            if time.monotonic() > deadline:
                stop_server(proc)
                raise RuntimeError(f"visdom server did not answer on {url} within {timeout}s: {_log_tail(log_path)}")
            time.sleep(0.1)
    return proc


def stop_server(proc, timeout=5):
    """Stop a server started by start_server (terminate, then kill after `timeout` s); None is ignored."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve(port=8097, host="127.0.0.1", env_path=".visdom"):
    """Run the dashboard in the foreground: print its URL and block until Ctrl-C."""
    proc = start_server(port=port, host=host, env_path=env_path)
    # Ctrl-C even when started from a shell that ignores SIGINT for background jobs; and a terminated
    # `dashboard` takes its server with it (the finally below) instead of orphaning it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    shown = "localhost" if is_loopback(host) else host
    print(f"visdom dashboard: http://{shown}:{port}  (env files in {Path(env_path).resolve()}; Ctrl-C stops it)")
    try:
        code = proc.wait()
        if code != 0:
            raise RuntimeError(f"visdom server stopped with code {code}: see {Path(env_path).resolve() / 'server.log'}")
    except KeyboardInterrupt:
        print("stopping the dashboard")
    finally:
        stop_server(proc)


def find_chromium():
    """Path of a Chromium/Chrome binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(args, url, timeout, window_size=(1400, 900), budget_ms=8000):
    """Run headless Chromium on `url` with a throw-away profile; return the CompletedProcess."""
    binary = find_chromium()
    if binary is None:
        raise RuntimeError("chromium not found: install it (bash .ci/chromium.sh) to take dashboard screenshots")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--window-size={window_size[0]},{window_size[1]}",
               # virtual time lets the page's scripts and plotly finish before the capture
               f"--virtual-time-budget={budget_ms}", *args, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def screenshot(url, png_path, timeout=90, window_size=(1400, 900), budget_ms=8000, args=()):
    """Save a PNG of `url` (e.g. http://127.0.0.1:8097/env/main) rendered by headless Chromium; `args`: more
    Chromium switches (e.g. a proxy)."""
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    result = _chromium([f"--screenshot={png_path}", *args], url, timeout, window_size, budget_ms)
    if not png_path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (code {result.returncode}): "
                           f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return png_path


def dump_dom(url, timeout=90, window_size=(1400, 900), budget_ms=8000, args=()):
    """The page's DOM as HTML after its scripts ran in headless Chromium; `args`: more Chromium switches."""
    result = _chromium(["--dump-dom", *args], url, timeout, window_size, budget_ms)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"chromium --dump-dom failed (code {result.returncode}): "
                           f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return result.stdout
