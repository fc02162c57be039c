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


def train_test_settings(root, classes):
    """Train (10 per class) and test (4 per class) folders under root/data; the settings that point at them."""
    write_class_folders(root / 'data' / 'train', classes, 10, seed=0)
    write_class_folders(root / 'data' / 'test', classes, 4, seed=1)
    return dict(train_data_root=str(root / 'data' / 'train'), test_data_root=str(root / 'data' / 'test'),
                checkpoint_dir=str(root / 'ck'))


def gradient_image(size):
    """An RGB image whose red channel grows with x and green with y: a crop of it shows where it was cut."""
    ramp = np.linspace(0, 255, size).round().astype(np.uint8)
    return Image.fromarray(np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                                     np.full((size, size), 128, np.uint8)], -1))


def crop_box(out, image):
    """The box (top, left, height, width) of the gradient_image `image` that torchvision's resized_crop turns
    into `out` (uint8 HWC, within one grey level), or None. The gradient's slope and offset give the box to a
    pixel or two; the exact one is searched around that."""
    from torchvision.transforms import functional as TF
    n, k = out.shape[0], 255 / (image.width - 1)
    u = np.arange(n // 4, 3 * n // 4)  # inner pixels: bilinear keeps a ramp linear away from the borders

    def span(profile):
        slope, intercept = np.polyfit(u, profile[u] / k, 1)
        length = slope * n
        return round(intercept + 0.5 - 0.5 * length / n), round(length)

    (top, height), (left, width) = span(out[..., 1].mean(1)), span(out[..., 0].mean(0))
    near = [(t, l, h, w) for t in range(top - 2, top + 3) for l in range(left - 2, left + 3)
            for h in range(height - 2, height + 3) for w in range(width - 2, width + 3)
            if t >= 0 and l >= 0 and h > 0 and w > 0 and t + h <= image.height and l + w <= image.width]
    for box in near:
        if np.abs(np.asarray(TF.resized_crop(image, *box, [n, n]), dtype=int) - out).max() <= 1:
            return box
    return None


@pytest.fixture
def tiny_data(tmp_path):
    """data/train and data/test with 3 classes named like traffic-sign folders (00000, 00001, 00002)."""
    classes = ['00000', '00001', '00002']
    write_class_folders(tmp_path / 'data' / 'train', classes, 10, seed=0)
    write_class_folders(tmp_path / 'data' / 'test', classes, 4, seed=1)
    return tmp_path / 'data'


FAST = dict(max_epoch=1, batch_size=8, num_workers=0, vis=False, model='SqueezeNet', image_size=32)
# One epoch of this on `learnable_data` reaches validation accuracy 1.0 (9 of 9) at seeds 0-3, read from the
# files or from the RAM cache; SqueezeNet does not learn it reliably in a few epochs (a class can stay dead).
LEARNS = dict(FAST, model='ResNet34')


@pytest.fixture
def learnable_data(tmp_path):
    """A train folder of 3 classes x 20 images (9 held out for validation), the same pattern as tiny_data."""
    return write_class_folders(tmp_path / 'learn', ['00000', '00001', '00002'], 20)


def plan_for(**settings):
    """The plan a run of these settings would use (utils/train/plan.resolve: every auto decided), nothing trained
    or written."""
    import config
    from utils.train.plan import resolve
    return resolve(config.parse(**settings))[0]


def run_cli(*args, cwd=ROOT, timeout=300, env=None):
    """Run `python main.py ARGS` as a user would (`env`: variables set on top of ours); returns the
    CompletedProcess (text output)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
