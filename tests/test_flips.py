"""--hflip=auto: what a horizontal flip means for each class, decided from the training images (data/flips.py),
applied per class to the training batches with a mirror pair's labels swapped, and followed by --tta=hflip."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import config
from conftest import FAST, run_cli
from data import flips
from data.dataset import find_classes, scan
from data.mix import MixBatch, flip_by_class
from utils.evaluate.tta import TTAModel, build_tta


def shapes(root, per_class, seed=0):
    """Real PNG files of four kinds of class, drawn at a random place, size and stroke on a noisy grey ground:
    `circle` (mirror-symmetric), `left` and `right` (an arrow each way: a mirror pair), `gamma` (a hook that a flip
    makes into no class). `per_class` maps a class to its image count."""
    rng = np.random.default_rng(seed)
    for name, count in per_class.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(count):
            img = Image.fromarray(rng.integers(100, 140, (32, 32, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(img)
            cx, cy, r = 16 + rng.integers(-3, 4), 16 + rng.integers(-3, 4), int(rng.integers(7, 11))
            width = int(rng.integers(2, 4))
            if name == 'circle':
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(255, 255, 255), width=width)
            elif name in ('left', 'right'):
                tip, tail = (cx - r, cx + r) if name == 'left' else (cx + r, cx - r)
                draw.line((tail, cy, tip, cy), fill=(255, 255, 255), width=width)
                back = tip + (r if name == 'left' else -r)
                draw.polygon([(tip, cy), (back, cy - r), (back, cy + r)], fill=(255, 255, 255))
            else:
                draw.line((cx - r, cy - r, cx + r, cy - r), fill=(255, 255, 255), width=width)
                draw.line((cx - r, cy - r, cx - r, cy + r), fill=(255, 255, 255), width=width)
            img.save(root / name / f'{i:03d}.png')
    return root


def test_the_probe_flips_a_symmetric_class_swaps_a_mirror_pair_and_never_flips_the_rest(tmp_path):
    root = shapes(tmp_path / 'train', {'circle': 30, 'gamma': 12, 'left': 30, 'right': 30})  # gamma: 12 images
    classes = find_classes(str(root))
    result = flips.probe(scan(str(root), classes), classes)
    assert result['flips'] == [0, flips.NEVER, 3, 2]  # circle itself, gamma never, left <-> right
    decided = {e['class']: (e['decision'], e['confidence']) for e in result['classes']}
    assert [decided[c][0] for c in classes] == ['flip', 'never', 'pair', 'pair']
    assert all(sure >= flips.SURE for _, sure in decided.values())
    assert result['images'] == 102 and result['seconds'] < 60
    assert flips.describe(result['flips'], classes) == \
        '1 of 4 classes flipped (circle), 1 mirror pair(s) swapped (left <-> right), 1 never flipped'


def test_a_class_too_small_to_tell_is_never_flipped(tmp_path):
    root = shapes(tmp_path / 'train', {'circle': 3, 'left': 30, 'right': 30})
    classes = find_classes(str(root))
    result = flips.probe(scan(str(root), classes), classes)
    assert result['flips'][0] == flips.NEVER and result['classes'][0]['decision'] == 'never'


def test_a_flip_by_class_flips_half_of_the_allowed_images_and_gives_a_pair_its_partners_label():
    torch.manual_seed(0)
    x = torch.rand(600, 3, 4, 4)
    y = torch.arange(600) % 3  # class 0 flips as itself, 1 never, 2 becomes 0 (half of a pair)
    out, labels = flip_by_class(x, y, torch.tensor([0, -1, 0]))
    flipped = torch.tensor([bool(torch.equal(o, i.flip(2))) and not torch.equal(o, i) for o, i in zip(out, x)])
    kept = torch.tensor([bool(torch.equal(o, i)) for o, i in zip(out, x)])
    assert bool((flipped | kept).all()) and not flipped[y == 1].any()
    assert 70 <= int(flipped[y == 0].sum()) <= 130 and 70 <= int(flipped[y == 2].sum()) <= 130
    assert torch.equal(labels[flipped], torch.zeros(int(flipped.sum()), dtype=torch.long))  # 2 became 0
    assert torch.equal(labels[kept], y[kept])
    # mixed afterwards, a mixed image blends the labels the flip gave
    torch.manual_seed(1)
    _, y_a, y_b, lam = MixBatch(mixup_prob=1.0)(out, labels)
    assert torch.equal(y_a, labels) and sorted(y_b.tolist()) == sorted(labels.tolist()) and lam < 1


def test_flip_aware_tta_reads_the_mirrors_probability_where_the_policy_sends_each_class():
    class LeftOrRight(torch.nn.Module):
        """Logits from the brightness of the left and right halves: class 0 symmetric, 1 = left, 2 = right,
        3 = a class a flip changes into no class."""
        def forward(self, x):
            left, right = x[..., :2].mean((1, 2, 3)), x[..., 2:].mean((1, 2, 3))
            return torch.stack([left + right, 3 * left, 3 * right, left - right], 1)
    x = torch.rand(5, 3, 4, 4)
    model = LeftOrRight()
    p, q = model(x).softmax(1), model(x.flip(3)).softmax(1)
    got = TTAModel(model, build_tta('hflip', 4), flips=(0, 2, 1, -1))(x)
    want = (p + torch.stack([q[:, 0], q[:, 2], q[:, 1], p[:, 3]], 1)) / 2
    assert torch.allclose(got, want / want.sum(1, keepdim=True), atol=1e-6)
    # without a policy (a checkpoint of an earlier version) both views are averaged class by class, as before
    assert torch.allclose(TTAModel(model, build_tta('hflip', 4))(x), (p + q) / 2, atol=1e-6)


def test_hflip_auto_is_the_default_decided_before_training_and_recorded(tmp_path):
    shapes(tmp_path / 'data' / 'train', {'circle': 20, 'gamma': 20, 'left': 20, 'right': 20})
    args = [f'--{k.replace("_", "-")}={v}' for k, v in FAST.items()] + ['--nohtml-report', '--run-name=auto']
    res = run_cli('train', *args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    line = next(line for line in res.stdout.splitlines() if line.startswith('hflip auto:'))
    assert 'left <-> right' in line and 'probe:' in line
    record = json.load(open(tmp_path / 'checkpoints' / 'auto' / 'config.json'))
    assert 'hflip' not in record['asked'] and record['used']['hflip'] == 'auto'
    assert record['used']['flips'][2:] == [3, 2] and record['used']['flips'][1] == -1
    assert [e['decision'] for e in record['used']['flip_probe']['classes']][2:] == ['pair', 'pair']
    ckpt = torch.load(tmp_path / 'checkpoints' / 'auto' / 'best_model.pth', weights_only=True)
    assert ckpt['plan']['flips'] == record['used']['flips']
    for hflip, want in (('true', [0, 1, 2, 3]), ('false', [-1] * 4)):
        res = run_cli('train', *args[:-1], f'--run-name={hflip}', f'--hflip={hflip}', cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        assert json.load(open(tmp_path / 'checkpoints' / hflip / 'config.json'))['used']['flips'] == want


@pytest.mark.parametrize('name', ['glyphs', 'signs'])
def test_the_suite_s_direction_bearing_sets_get_their_mirror_pairs(name, tmp_path):
    from benchmarks import datasets
    try:
        folder = datasets.build(name, str(tmp_path / 'suite'))
    except config.UserError as e:  # the font packages are missing (.ci/suite-data.sh installs them)
        pytest.skip(str(e))
    classes = find_classes(os.path.join(folder, 'train'))
    result = flips.probe(scan(os.path.join(folder, 'train'), classes), classes)
    pairs = {(classes[c], classes[a]) for c, a in enumerate(result['flips']) if a not in (c, flips.NEVER)}
    if name == 'glyphs':
        assert {('lower_b', 'lower_d'), ('lower_d', 'lower_b'), ('lower_p', 'lower_q'), ('lower_q', 'lower_p')} <= pairs
        assert result['flips'][classes.index('upper_A')] == classes.index('upper_A')
        assert result['flips'][classes.index('upper_R')] == flips.NEVER
    else:
        from benchmarks.datasets import signs
        assert pairs == {(c, signs.partner(c)) for c in classes if signs.kind(c) == 'pair'}
        kinds = [signs.kind(c) for c in classes]
        safe = [a == c for c, a in enumerate(result['flips'])]
        assert sum(s for s, k in zip(safe, kinds) if k == 'symmetric') >= 8  # of 10
        assert sum(s for s, k in zip(safe, kinds) if k == 'asymmetric') <= 2  # of 10
