"""Screenshot a visdom env with headless Chromium, e.g. for docs/dashboard.md.

    python benchmarks/dashboard_screenshot.py --out dashboard.png                 # demo plots, own server
    python benchmarks/dashboard_screenshot.py --url http://127.0.0.1:8097 --env main --out main.png
    python benchmarks/dashboard_screenshot.py --train 3 --out docs/dashboard.png   # a real run on the digits demo
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.dashboard.server import free_port, screenshot, start_server, stop_server  # noqa: E402


def push_demo(port, env):
    """Draw the panes a training run shows: loss curve, confusion matrix, sample grid, log text."""
    import numpy as np
    import visdom
    vis = visdom.Visdom(port=port, use_incoming_socket=False, raise_exceptions=True)
    epochs = np.arange(1, 21)
    vis.line(X=np.column_stack([epochs, epochs]), Y=np.column_stack([2 * 0.85 ** epochs, 2.2 * 0.88 ** epochs]),
             win="loss", env=env, opts={"title": "loss", "legend": ["train", "val"], "xlabel": "epoch"})
    confusion = np.eye(5) * 40 + np.random.default_rng(0).integers(0, 6, size=(5, 5))
    vis.heatmap(confusion, win="confusion", env=env, opts={"title": "confusion matrix"})
    vis.images(np.random.default_rng(1).integers(0, 256, size=(8, 3, 32, 32), dtype=np.uint8),
               nrow=4, win="samples", env=env, opts={"title": "samples"})
    vis.text("epoch 20: train loss 0.08, <b>val acc 0.97</b>", win="log", env=env)


def train_demo(port, env, epochs):
    """A short real training run on the bundled digits demo, streamed to the server."""
    import config
    from utils.train import engine
    cfg = config.parse(model='SqueezeNet', max_epoch=epochs, batch_size=32, image_size=32, print_freq=5,
                       num_workers=0, env=env, vis_port=port, checkpoint_dir=tempfile.mkdtemp(prefix='demo-run-'))
    start = time.perf_counter()
    engine.fit(cfg)
    print(f"trained {epochs} epoch(s) in {time.perf_counter() - start:.1f}s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="dashboard.png", help="PNG to write (default: dashboard.png)")
    parser.add_argument("--url", default=None, help="running server to photograph (default: start one with demo plots)")
    parser.add_argument("--env", default="demo", help="visdom env to show (default: demo)")
    parser.add_argument("--train", type=int, default=0, metavar="EPOCHS",
                        help="instead of demo plots, train SqueezeNet on the digits demo for EPOCHS (default: 0)")
    parser.add_argument("--height", type=int, default=900, help="browser window height in pixels (default: 900)")
    args = parser.parse_args()
    proc = None
    try:
        if args.url is None:
            port = free_port()
            start = time.perf_counter()
            proc = start_server(port=port, env_path=tempfile.mkdtemp(prefix="visdom-demo-"))
            print(f"server answered in {time.perf_counter() - start:.1f}s")
            if args.train:
                train_demo(port, args.env, args.train)
            else:
                push_demo(port, args.env)
            args.url = f"http://127.0.0.1:{port}"
        start = time.perf_counter()
        path = screenshot(f"{args.url.rstrip('/')}/env/{args.env}", args.out, window_size=(1400, args.height))
        print(f"wrote {path} in {time.perf_counter() - start:.1f}s")
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
