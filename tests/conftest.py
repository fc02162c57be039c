"""Shared fixtures: tiny real image folders on disk and a fast training configuration."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('PAGER', 'cat')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_class_folders(root, classes, per_class, size=32, seed=0):
    """class k = a bright square at a class-specific place on noise, saved as PNG under root/<class>/."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            r, c = divmod(k % 9, 3)
            s = size // 3
            arr[r * s:(r + 1) * s, c * s:(c + 1) * s, k % 3] = 230
            Image.fromarray(arr).save(os.path.join(folder, f'{i:03d}.png'))
    return root


@pytest.fixture
def tiny_data(tmp_path):
    """data/train and data/test with 3 classes named like traffic-sign folders (00000, 00001, 00002)."""
    classes = ['00000', '00001', '00002']
    write_class_folders(tmp_path / 'data' / 'train', classes, 10, seed=0)
    write_class_folders(tmp_path / 'data' / 'test', classes, 4, seed=1)
    return tmp_path / 'data'


FAST = dict(max_epoch=1, batch_size=8, num_workers=0, vis=False, model='SqueezeNet', image_size=32)


def run_cli(*args, cwd=ROOT, timeout=300, env=None):
    """Run `python main.py ARGS` as a user would (`env`: variables set on top of ours); returns the
    CompletedProcess (text output)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
