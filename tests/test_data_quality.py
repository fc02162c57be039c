"""analyze, clean / undo, manifests, pseudo-labelling thresholds and hard examples, on real files."""
import csv
import hashlib
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import config
from conftest import FAST, ROOT, plan_for, run_cli, write_class_folders
from utils.curate import analyze as report
from data import loaders, manifest
from utils.curate import clean
from data.demo import ensure_demo
from data.hard import UpsampledDataset
from utils.curate import pseudo


def tree(root):
    """{relative path: sha256} of every file, plus every folder (value None): the byte-level state of a tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            with open(os.path.join(dirpath, f), 'rb') as fh:
                out[os.path.relpath(os.path.join(dirpath, f), root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def plant_problems(root):
    """The six problems of the done-when list, planted in a copy of the demo data."""
    open(os.path.join(root, 'train', '0', 'zero.png'), 'wb').close()
    good = os.path.join(root, 'train', '1', sorted(os.listdir(os.path.join(root, 'train', '1')))[0])
    data = open(good, 'rb').read()
    open(os.path.join(root, 'train', '1', 'cut.png'), 'wb').write(data[:len(data) // 2])
    open(os.path.join(root, 'train', '2', 'notes.png'), 'w').write('these are notes, not pixels\n')
    first3 = sorted(os.listdir(os.path.join(root, 'train', '3')))[0]
    shutil.copy(os.path.join(root, 'train', '3', first3), os.path.join(root, 'train', '3', 'again.png'))
    first4 = sorted(os.listdir(os.path.join(root, 'train', '4')))[0]
    shutil.copy(os.path.join(root, 'train', '4', first4), os.path.join(root, 'test', '4', 'copied.png'))
    os.makedirs(os.path.join(root, 'train', 'empty'))
    return first3, first4


def test_planted_problems_are_each_reported_and_clean_undo_restores_the_folder_byte_identical(tmp_path):
    root = ensure_demo(str(tmp_path / 'demo'))
    first3, first4 = plant_problems(root)
    before = tree(root)
    out = tmp_path / 'runs'
    r = run_cli('analyze', f'--data-root={root}', f'--checkpoint-dir={out}', '--run-name=a', '--vis=false')
    assert r.returncode == 0, r.stderr
    problems = json.load(open(out / 'a' / 'report.json'))['problems']
    found = {(p['category'], p['path']) for p in problems}
    assert ('zero_byte', 'train/0/zero.png') in found
    assert ('truncated', 'train/1/cut.png') in found
    assert ('non_image', 'train/2/notes.png') in found
    assert ('exact_dup', 'train/3/again.png') in found
    assert ('leak', 'test/4/copied.png') in found
    assert ('empty_class', 'train/empty') in found
    assert len([p for p in problems if p['category'] in report.FILE_CATEGORIES]) == 5  # nothing else flagged
    for name in ('zero.png', 'cut.png', 'notes.png', 'again.png', 'copied.png', 'empty'):
        assert name in r.stdout

    full = json.load(open(out / 'a' / 'report.json'))
    assert len(clean.clean(root, report.DEFAULT_CLEAN, dry_run=True, report=full)) == 5
    assert tree(root) == before and not os.path.exists(root + '-quarantine')  # dry run: nothing moved
    r = run_cli('clean', f'--data-root={root}')
    assert r.returncode == 0 and 'moved 5 file(s)' in r.stdout, r.stderr
    quarantine = root + '-quarantine'
    assert not os.path.exists(os.path.join(root, 'train', '0', 'zero.png'))
    assert os.path.exists(os.path.join(quarantine, 'test', '4', 'copied.png'))
    assert os.path.exists(os.path.join(root, 'train', '3', first3))  # the first copy stays
    rows = list(csv.DictReader(open(os.path.join(quarantine, 'manifest.csv'))))
    assert {row['original'] for row in rows} == {'train/0/zero.png', 'train/1/cut.png', 'train/2/notes.png',
                                                 'train/3/again.png', 'test/4/copied.png'}
    assert all(row['category'] and len(row['sha256']) == 64 for row in rows)
    r = run_cli('clean', f'--data-root={root}', '--undo')
    assert r.returncode == 0 and 'restored 5 file(s)' in r.stdout, r.stderr
    assert tree(root) == before


def write_image(path, arr, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, fmt)


def test_report_covers_every_category_sizes_modes_formats_and_imbalance(tmp_path):
    root = tmp_path / 'd'
    write_class_folders(root / 'train', ['a', 'b', 'c'], 6, seed=0)
    write_class_folders(root / 'test', ['a', 'b'], 2, seed=1)
    for i in range(6):  # class a: 12 images, 6 of them grayscale JPEG 40x20 -> imbalance 12 / 6 = 2
        write_image(str(root / 'train' / 'a' / f'g{i}.jpg'), np.full((20, 40), 20 * i, np.uint8) +
                    np.arange(40, dtype=np.uint8)[None, :] * (i + 1), 'JPEG')
    base = np.asarray(Image.open(root / 'train' / 'b' / '000.png'))
    brighter = np.clip(base.astype(int) + 12, 0, 255).astype(np.uint8)
    write_image(str(root / 'train' / 'b' / 'brighter.png'), brighter)  # near copy in the same split
    write_image(str(root / 'test' / 'b' / 'resaved.png'), np.asarray(Image.fromarray(base).resize((64, 64))))
    shutil.copy(root / 'train' / 'a' / '000.png', root / 'train' / 'b' / 'mislabelled.png')
    png = io.BytesIO()
    Image.fromarray(base).save(png, 'PNG')
    broken = bytearray(png.getvalue())
    broken[60:200] = bytes(140)  # header intact, compressed pixels garbage
    (root / 'train' / 'c' / 'garbled.png').write_bytes(bytes(broken))
    (root / 'train' / 'c' / 'readme.txt').write_text('labels by hand')

    result = report.analyze(str(root), progress=False)
    by = {}
    for p in result['problems']:
        by.setdefault(p['category'], []).append(p)
    assert [p['path'] for p in by['near_dup']] == ['train/b/brighter.png']
    assert [p['path'] for p in by['leak']] == ['test/b/resaved.png'] and 'near copy' in by['leak'][0]['detail']
    assert [p['path'] for p in by['exact_dup']] == ['train/b/mislabelled.png']
    assert 'labelled a there' in by['exact_dup'][0]['detail']
    assert [p['path'] for p in by['unreadable']] == ['train/c/garbled.png']
    assert [p['path'] for p in by['other_file']] == ['train/c/readme.txt']
    assert [(p['split'], p['class']) for p in by['missing_class']] == [('test', 'c')]
    train = result['splits']['train']
    assert train['per_class'] == {'a': 12, 'b': 8, 'c': 6} and train['imbalance'] == 2.0
    assert train['modes'] == {'RGB': 20, 'L': 6} and train['formats'] == {'PNG': 20, 'JPEG': 6}
    assert train['sizes']['40x20'] == 6 and train['width']['max'] == 40
    assert result['splits']['test']['sizes']['64x64'] == 1

    paths = report.write_report(result, str(tmp_path / 'out'))
    md = open(paths['report.md']).read()
    assert '| train | 26 |' in md and '### near_dup (1)' in md
    assert next(csv.DictReader(open(paths['class_counts.csv']))) == {'class': 'a', 'train': '12', 'test': '2'}
    assert {row['category'] for row in csv.DictReader(open(paths['problems.csv']))} == set(by)


def test_clean_refuses_folder_categories_and_undo_refuses_to_overwrite(tmp_path):
    root = str(tmp_path / 'd')
    write_class_folders(os.path.join(root, 'train'), ['a', 'b'], 3)
    open(os.path.join(root, 'train', 'a', 'zero.png'), 'wb').close()
    with pytest.raises(ValueError, match='folders'):
        clean.clean(root, ['empty_class'])
    moved = clean.clean(root, ['zero_byte'])
    assert [m[0] for m in moved] == ['train/a/zero.png']
    open(os.path.join(root, 'train', 'a', 'zero.png'), 'w').write('a new file under the old name')
    state = tree(root), tree(root + '-quarantine')
    with pytest.raises(ValueError, match='refusing to overwrite'):
        clean.undo(root)
    assert (tree(root), tree(root + '-quarantine')) == state  # nothing moved


def test_split_manifest_round_trips_and_trains_with_extra_manifest(tmp_path):
    write_class_folders(tmp_path / 'data' / 'train', ['a', 'b', 'c'], 20)
    write_class_folders(tmp_path / 'more' / 'x', ['a', 'b'], 2, seed=3)
    r = run_cli('split', f'--train-data-root={tmp_path / "data" / "train"}', '--val-ratio=0.15', '--seed=3')
    assert r.returncode == 0, r.stderr
    path = tmp_path / 'data' / 'split.csv'
    text = path.read_text().splitlines()
    assert text[0] == 'path,label,split' and text[1].startswith('train/a/')  # relative to the manifest's folder
    rows = manifest.read(str(path))
    assert sum(r['split'] == 'val' for r in rows) == 9  # 3 per class
    cfg = config.parse(**FAST, train_data_root=str(tmp_path / 'data' / 'train'), val_ratio=0.15, seed=3)
    assert rows == [dict(r, path=os.path.normpath(os.path.abspath(r['path']))) for r in manifest.split_rows(cfg)]

    extra = manifest.write(str(tmp_path / 'extra.csv'), [{'path': str(tmp_path / 'more' / 'x' / 'a' / '000.png'),
                                                          'label': 'b'}])
    train_set, val_set = loaders.build_train_val(plan_for(**FAST, manifest=str(path), extra_manifest=extra))
    assert train_set.classes == ['a', 'b', 'c'] and len(val_set) == 9 and len(train_set) == 51 + 1
    assert train_set.samples[-1] == (str(tmp_path / 'more' / 'x' / 'a' / '000.png'), 1)
    assert {p for p, _ in val_set.samples} == {r['path'] for r in rows if r['split'] == 'val'}


def test_kfold_on_a_manifest_partitions_its_rows(tmp_path):
    write_class_folders(tmp_path / 'data' / 'train', ['a', 'b', 'c'], 6)
    rows = manifest.split_rows(config.parse(train_data_root=str(tmp_path / 'data' / 'train')))
    path = manifest.write(str(tmp_path / 'data' / 'split.csv'), rows, ('path', 'label', 'split'))
    seen = []
    for fold in range(3):
        classes, train, val = loaders.train_val_samples(config.parse(manifest=path, kfold=3, fold=fold))
        assert classes == ['a', 'b', 'c'] and not {p for p, _ in train} & {p for p, _ in val}
        assert np.bincount([y for _, y in val]).tolist() == [2, 2, 2]  # stratified
        seen += [p for p, _ in val]
    assert sorted(seen) == sorted(r['path'] for r in rows)  # the folds cover the manifest's rows once


def test_class_threshold_is_the_lowest_confidence_reaching_the_precision_target():
    # Class 0 predictions, most confident first: right, right, wrong, right, right, wrong, right (all above 0.5).
    conf = [0.99, 0.97, 0.95, 0.93, 0.90, 0.80, 0.70]
    right = [1, 1, 0, 1, 1, 0, 1]
    probs = np.array([[c, 1 - c] for c in conf] + [[0.2, 0.8]] * 4 + [[0.4, 0.6]])
    targets = np.array([0 if r else 1 for r in right] + [1] * 4 + [0])
    t, prec, n = pseudo.class_thresholds(probs, targets, floor=0.5, target=0.8, min_support=1)[0]
    assert (t, prec, n) == (0.90, 0.8, 5)  # 4 right of the 5 at >= 0.90; at 0.80 it falls to 4/6
    assert pseudo.class_thresholds(probs, targets, 0.5, 1.0, 1)[0][:2] == (0.97, 1.0)
    assert pseudo.class_thresholds(probs, targets, 0.5, 1.0, 3)[0][0] == float('inf')  # 3 images never all right
    assert pseudo.class_thresholds(probs, targets, 0.95, 0.8, 1)[0][0] == 0.97  # the floor cuts first
    # class 1: the four 0.8s are right, the 0.6 is wrong -> 4/5 at 0.6, 4/4 at 0.8
    assert pseudo.class_thresholds(probs, targets, 0.5, 0.9, 1)[1][:2] == (0.8, 1.0)


def test_class_cap_keeps_the_merged_distribution_close_to_training():
    train = np.array([100, 50, 50])
    # class 0 is easy (many confident candidates), classes 1 and 2 are not
    probs = np.array([[0.99, 0.005, 0.005]] * 300 + [[0.01, 0.98, 0.01]] * 20 + [[0.01, 0.01, 0.98]] * 10)
    thresholds = [(0.9, 1.0, 10)] * 3
    accepted, rows, ratio, _ = pseudo.select(probs, train, thresholds, floor=0.9)
    assert ratio == pytest.approx(0.4)  # median of 300/100, 20/50, 10/50
    assert [len(a) for a in accepted] == [40, 20, 10] and rows[0]['capped'] == 260
    uncapped = pseudo.distribution_gap(train, [300, 20, 10])
    assert pseudo.distribution_gap(train, [40, 20, 10]) < 0.05 < uncapped
    accepted, _, _, _ = pseudo.select(probs, train, [(0.9, 1.0, 10), (float('inf'), 0.5, 3), (0.9, 1.0, 10)],
                                      floor=0.9, cap_ratio=1.0)
    assert [len(a) for a in accepted] == [100, 0, 10]  # class 1 never reached its precision target


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One SqueezeNet epoch on a manifest of tiny data, plus an unlabelled folder."""
    from utils.train import engine
    tmp = tmp_path_factory.mktemp('pseudo')
    write_class_folders(tmp / 'data' / 'train', ['a', 'b', 'c'], 12, seed=0)
    write_class_folders(tmp / 'external' / 'batch1', ['a', 'b', 'c'], 4, seed=7)
    cfg = config.parse(**FAST, train_data_root=str(tmp / 'data' / 'train'), checkpoint_dir=str(tmp / 'runs'),
                       run_name='base')
    rows = manifest.split_rows(cfg)
    manifest.write(str(tmp / 'data' / 'split.csv'), rows, ('path', 'label', 'split'))
    cfg = config.parse(**FAST, manifest=str(tmp / 'data' / 'split.csv'), checkpoint_dir=str(tmp / 'runs'),
                       run_name='base')
    run_dir = engine.fit(cfg)
    return tmp, os.path.join(run_dir, 'best_model.pth')


def test_pseudo_never_writes_into_the_source_folder(trained):
    tmp, ckpt = trained
    source = str(tmp / 'external')
    before = tree(source)
    mtimes = {p: os.stat(os.path.join(source, p)).st_mtime_ns for p in before}
    loose = dict(load_path=ckpt, unlabeled_root=source, pseudo_floor=0.0, pseudo_precision=0.01,
                 pseudo_min_support=1, pseudo_cap=1.0, num_workers=0, batch_size=8)
    (run_dir, accepted, rep), = pseudo.run(config.parse(**loose, checkpoint_dir=str(tmp / 'runs'), run_name='p'))
    assert tree(source) == before
    assert {p: os.stat(os.path.join(source, p)).st_mtime_ns for p in before} == mtimes
    assert not pseudo.inside(run_dir, source) and rep['images'] == 12
    rows = manifest.read(accepted, allow_empty=True)
    assert len(rows) == rep['accepted'] > 0 and all(r['path'].startswith(source) for r in rows)
    assert {'path', 'label', 'confidence'} <= set(rows[0])
    per_class = list(csv.DictReader(open(os.path.join(run_dir, 'pseudo_report.csv'))))
    assert [r['class'] for r in per_class] == ['a', 'b', 'c'] and 'est_precision' in per_class[0]
    with pytest.raises(ValueError, match='never writes into the source folder'):
        pseudo.run(config.parse(**loose, checkpoint_dir=os.path.join(source, 'runs')))
    assert tree(source) == before


def test_pseudo_never_labels_validation_or_test_images_found_by_path_or_content(trained, tmp_path, capsys):
    tmp, ckpt = trained
    rows = manifest.read(str(tmp / 'data' / 'split.csv'))
    val = {r['path'] for r in rows if r['split'] == 'val'}
    copied = [r['path'] for r in rows if r['split'] == 'train'][:3]
    for p in copied:  # the test folder holds copies of three training images under other names
        os.makedirs(tmp_path / 'test' / os.path.basename(os.path.dirname(p)), exist_ok=True)
        shutil.copy(p, tmp_path / 'test' / os.path.basename(os.path.dirname(p)) / ('t' + os.path.basename(p)))
    source = str(tmp / 'data' / 'train')  # the validation images sit under the unlabelled folder
    (run_dir, accepted, rep), = pseudo.run(config.parse(
        load_path=ckpt, unlabeled_root=source, test_data_root=str(tmp_path / 'test'), pseudo_floor=0.0,
        pseudo_precision=0.01, pseudo_min_support=1, pseudo_cap=10.0, num_workers=0,
        checkpoint_dir=str(tmp_path / 'runs'), run_name='p'))
    taken = {r['path'] for r in manifest.read(accepted, allow_empty=True)}
    assert len(val) == 6 and not taken & val and not taken & set(copied)
    assert rep['images'] == 36 and rep['excluded'] == 9
    assert sum(r['predicted'] for r in rep['classes']) == 36 - 9 and len(taken) == rep['accepted']  # the rest
    assert '9 excluded as validation / test images' in capsys.readouterr().out


def test_hard_lists_name_exactly_the_images_the_checkpoint_gets_wrong(trained):
    import torch
    from data.transforms import eval_transform
    from utils.evaluate import loop
    from utils.curate import hard
    tmp, ckpt = trained
    written = hard.find(config.parse(load_path=ckpt, num_workers=0))
    model, cfg, saved, _ = loop.load_for_eval(config.parse(load_path=ckpt, num_workers=0))
    transform = eval_transform(cfg, cfg.image_size)
    split = manifest.read(str(tmp / 'data' / 'split.csv'))
    for name in ('train', 'val'):
        rows = [r for r in split if r['split'] == name]
        with torch.no_grad():
            logits = model.eval()(torch.stack([transform(Image.open(r['path']).convert('RGB')) for r in rows]))
        wrong = {os.path.abspath(r['path']): (r['label'], saved['classes'][p])
                 for r, p in zip(rows, logits.argmax(1).tolist()) if saved['classes'][p] != r['label']}
        listed = manifest.read(written[name], allow_empty=True)
        assert wrong and {os.path.abspath(r['path']): (r['label'], r['predicted']) for r in listed} == wrong
        assert len(listed) == len(wrong)


def _upsampled(tmp_path, **kw):
    """Training and validation sets with one extra copy of two listed training images, normalised with the
    training set's own statistics as `train` does; returns (upsampled set, plan, indices of the listed images)."""
    write_class_folders(tmp_path / 'train', ['a', 'b', 'c'], 6, seed=0)
    write_class_folders(tmp_path / 'val', ['a', 'b', 'c'], 2, seed=1)
    paths = [str(tmp_path / 'train' / 'b' / '001.png'), str(tmp_path / 'train' / 'c' / '004.png')]
    listed = manifest.write(str(tmp_path / 'hard.csv'), [{'path': p, 'label': p.split(os.sep)[-2]} for p in paths])
    plan = plan_for(**{**FAST, **kw}, train_data_root=str(tmp_path / 'train'), val_data_root=str(tmp_path / 'val'),
                    augment='none', jitter=0, erasing=0, normalize='dataset', upsample_hard=1, hard_list=listed)
    up, val = loaders.build_train_val(plan)
    return up, plan, [[p for p, _ in up.samples].index(p) for p in paths]


def test_upsampled_copies_see_the_runs_transform_and_normalisation(tmp_path):
    import torch
    from torchvision import transforms as T
    from data.dataset import load_rgb
    up, cfg, hard = _upsampled(tmp_path, cache='none')  # streaming: the per-image transform
    assert cfg.normalize == 'dataset' and cfg.mean != config.IMAGENET_MEAN
    stats = T.Normalize(cfg.mean, cfg.std)  # the training set's own, as validation
    n = len(up.base)
    assert isinstance(up, UpsampledDataset) and len(up) == n + 2 and up.targets[n:] == [1, 2]
    for k, i in enumerate(hard):
        image = load_rgb(up.samples[i][0])
        assert torch.allclose(up[i][0], stats(T.ToTensor()(image)), atol=1e-6)  # the original, as validation sees it
        torch.manual_seed(k)
        copy = up[n + k][0]
        torch.manual_seed(k)  # the same random region, cut by hand
        region = T.RandomResizedCrop(32, scale=(0.4, 1.0))(T.Resize((32, 32))(image))
        assert torch.allclose(copy, stats(T.ToTensor()(region)), atol=1e-6)


def test_upsampled_copies_come_from_the_ram_cache_too(tmp_path, capsys):
    import torch
    from torchvision import transforms as T
    from data.cache import CachedImages
    up, cfg, hard = _upsampled(tmp_path, cache='ram')
    n = len(up.base)
    assert isinstance(up.base, CachedImages) and len(up) == n + 2 and up.targets[n:] == [1, 2]
    assert '2 of 2 listed images are training images' in capsys.readouterr().out
    for k, i in enumerate(hard):
        torch.manual_seed(k)
        copy = up[n + k][0]
        torch.manual_seed(k)
        # a region of the cached uint8 image, augmented and normalised per batch on the device as every cached image
        assert torch.equal(copy, T.RandomResizedCrop(32, scale=(0.4, 1.0))(up.base.images[i]))


def test_class_distribution_bar_chart_reaches_a_running_dashboard(tmp_path):
    from utils.dashboard.server import free_port, start_server, stop_server
    from utils.dashboard.assets import is_built
    if not is_built() and shutil.which('npm') is None:
        pytest.skip("visdom's static files are missing and npm is not installed")
    from utils.dashboard.client import Visualizer
    port = free_port()
    proc = start_server(port=port, env_path=tmp_path, timeout=30)
    try:
        vis = Visualizer('analyze_test', 'http://127.0.0.1', port)
        result = {'classes': ['a', 'b'], 'splits': {'train': {'per_class': {'a': 3, 'b': 1}},
                                                    'test': {'per_class': {'a': 1}}}}
        report.plot_class_counts(result, vis)
        assert vis.vis.win_exists('class distribution', env='analyze_test')
        data = json.loads(vis.vis.get_window_data('class distribution', env='analyze_test'))
        assert [d['y'] for d in data['content']['data']] == [[3, 1], [1, 0]]
    finally:
        stop_server(proc)


@pytest.mark.parametrize('field, value', [
    ('original', '../escaped.png'),            # a file written beside the data root
    ('original', '/ABS/escaped.png'),          # a file written anywhere
    ('original', 'train/link/escaped.png'),    # through a symlinked folder that leaves the root
    ('quarantined', '../victim.png'),          # a file moved out of a folder beside the quarantine
])
def test_undo_refuses_a_manifest_row_that_leaves_the_data_root_or_the_quarantine(tmp_path, capsys, field, value):
    import main
    root = str(tmp_path / 'd')
    write_class_folders(os.path.join(root, 'train'), ['a', 'b'], 3)
    open(os.path.join(root, 'train', 'a', 'zero.png'), 'wb').close()
    open(os.path.join(root, 'train', 'b', 'zero.png'), 'wb').close()
    clean.clean(root, ['zero_byte'])
    outside = tmp_path / 'elsewhere'
    outside.mkdir()
    os.symlink(outside, os.path.join(root, 'train', 'link'))
    (tmp_path / 'victim.png').write_bytes(b'')  # same content as the quarantined zero-byte files
    path = os.path.join(root + '-quarantine', 'manifest.csv')
    rows = list(csv.DictReader(open(path)))
    rows[1][field] = value.replace('/ABS', str(outside))
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, clean.FIELDS)
        w.writeheader()
        w.writerows(rows)
    state = tree(str(tmp_path))
    assert main.main(['clean', f'--data-root={root}', '--undo']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'manifest.csv line 3' in err[0] and value.replace('/ABS', str(outside)) in err[0]
    assert tree(str(tmp_path)) == state  # nothing moved, nothing created anywhere


def test_requirements_ask_for_a_numpy_with_bitwise_count():
    # analyze's near-duplicate search calls np.bitwise_count, new in numpy 2.0
    from packaging.requirements import Requirement
    lines = [line.split('#')[0].strip() for line in open(os.path.join(ROOT, 'requirements.txt'))]
    numpy = next(Requirement(line) for line in lines if line and Requirement(line).name == 'numpy')
    assert not numpy.specifier.contains('1.26.4') and numpy.specifier.contains('2.0.0')
