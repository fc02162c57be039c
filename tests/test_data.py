import os

import numpy as np
import pytest
from PIL import Image

import config
import main
from conftest import FAST, plan_for, write_class_folders
from data import loaders, manifest
from data.dataset import (BadFileLog, ImageFolderDataset, auto_image_size, collate, find_classes, load_rgb,
                          stratified_split)


def test_classes_are_sorted_folder_names_and_keep_numeric_order(tmp_path):
    names = [f'{i:05d}' for i in (61, 0, 10, 2)]
    for n in names:
        (tmp_path / n).mkdir()
    (tmp_path / '.hidden').mkdir()
    (tmp_path / 'readme.txt').write_text('not a class')
    assert find_classes(str(tmp_path)) == ['00000', '00002', '00010', '00061']


def test_every_listed_extension_is_found_and_labelled_by_folder(tmp_path):
    exts = ['jpg', 'jpeg', 'png', 'ppm', 'bmp', 'gif', 'tif', 'webp', 'PNG']
    for i, ext in enumerate(exts):
        folder = tmp_path / ('a' if i % 2 else 'b')
        folder.mkdir(exist_ok=True)
        fmt = {'jpg': 'JPEG', 'jpeg': 'JPEG', 'tif': 'TIFF', 'ppm': 'PPM'}.get(ext.lower(), ext.upper())
        Image.new('RGB', (8, 8), (i * 20, 0, 0)).save(folder / f'{i}.{ext}', format=fmt)
    (tmp_path / 'a' / 'notes.txt').write_text('x')
    ds = ImageFolderDataset.from_folder(str(tmp_path))
    assert len(ds) == len(exts)
    assert all(ds.classes[label] == os.path.basename(os.path.dirname(p)) for p, label in ds.samples)


@pytest.mark.parametrize('mode', ['L', 'P', 'RGBA', 'CMYK', 'I;16', 'LA', '1'])
def test_any_image_mode_loads_as_8_bit_rgb(tmp_path, mode):
    path = tmp_path / f'img.{"tif" if mode == "CMYK" else "png"}'
    if mode == 'I;16':
        Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, (6, 6)).save(path)
    img = load_rgb(str(path))
    assert img.mode == 'RGB' and img.size == (6, 6)
    if mode == 'I;16':  # full-scale 16-bit white stays white, not clipped garbage
        assert np.asarray(img).min() == 255


def test_a_corrupt_file_is_skipped_with_one_warning_naming_it(tmp_path, capsys):
    write_class_folders(tmp_path, ['a', 'b'], 3)
    bad = tmp_path / 'a' / 'broken.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
    ds = ImageFolderDataset.from_folder(str(tmp_path), transform=lambda im: np.asarray(im, dtype=np.float32))
    images, labels, skipped = collate([ds[i] for i in range(len(ds))])
    assert len(labels) == 6 and [p for p, _ in skipped] == [str(bad)]
    log = BadFileLog()
    log.add(skipped)
    log.add(skipped)  # the same file again: no second warning, still one in the summary
    assert capsys.readouterr().err.count('broken.png') == 1
    assert log.summary() == '1 unreadable image(s) skipped'


def test_a_file_given_as_the_data_folder_is_called_a_file_before_anything_is_written(tmp_path, monkeypatch,
                                                                                   capsys):
    import main
    (tmp_path / 'train.zip').write_bytes(b'PK')
    monkeypatch.chdir(tmp_path)
    assert main.main(['train', '--train-data-root=train.zip', '--vis=false']) == 2
    assert capsys.readouterr().err == ('error: data folder train.zip is a file, not a folder; lay images out as '
                                       'train.zip/<class name>/<image>\n')
    assert [p.name for p in tmp_path.iterdir()] == ['train.zip']


def test_a_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match='does not exist'):
        find_classes(str(tmp_path / 'nope'))
    with pytest.raises(ValueError, match='no class sub-folders'):
        find_classes(str(tmp_path))
    (tmp_path / 'cls').mkdir()
    with pytest.raises(ValueError, match='holds no images'):
        ImageFolderDataset.from_folder(str(tmp_path))


def test_a_test_folder_with_unknown_classes_is_refused(tmp_path):
    write_class_folders(tmp_path, ['a', 'zebra'], 1)
    with pytest.raises(ValueError, match="not trained on: \\['zebra'\\]"):
        ImageFolderDataset.from_folder(str(tmp_path), classes=['a', 'b'])


def test_a_test_folder_with_a_subset_of_classes_keeps_the_training_labels(tmp_path):
    write_class_folders(tmp_path, ['c'], 2)
    ds = ImageFolderDataset.from_folder(str(tmp_path), classes=['a', 'b', 'c'])
    assert ds.targets == [2, 2]


def test_stratified_split_is_seeded_disjoint_and_keeps_class_shares():
    targets = [0] * 40 + [1] * 20 + [2] * 10 + [3] * 1
    train, val = stratified_split(targets, 0.2, seed=3)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(len(targets)))
    counts = np.bincount([targets[i] for i in val], minlength=4)
    assert counts.tolist() == [8, 4, 2, 0]
    assert stratified_split(targets, 0.2, seed=3) == (train, val)
    assert stratified_split(targets, 0.2, seed=4) != (train, val)


def test_auto_image_size_is_the_rounded_median_side(tmp_path):
    for i, side in enumerate([90, 100, 110]):
        Image.new('RGB', (side, side)).save(tmp_path / f'{i}.png')
    samples = [(str(tmp_path / f'{i}.png'), 0) for i in range(3)]
    assert auto_image_size(samples) == 96
    Image.new('RGB', (1000, 1000)).save(tmp_path / 'big.png')
    assert auto_image_size([(str(tmp_path / 'big.png'), 0)]) == 224


def fast_args():
    return [f'--{k.replace("_", "-")}={v}' for k, v in FAST.items()]


def test_one_class_data_is_refused_in_one_line_before_a_run_directory_exists(tmp_path, capsys):
    write_class_folders(tmp_path / 'train', ['only'], 6)
    assert main.main(['train', f'--train-data-root={tmp_path / "train"}', f'--checkpoint-dir={tmp_path / "ck"}',
                      *fast_args()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'at least 2 classes' in err[0] and "['only']" in err[0]
    assert not (tmp_path / 'ck').exists()
    # a manifest with a single label is refused the same way
    rows = [{'path': str(p), 'label': 'only'} for p in (tmp_path / 'train' / 'only').iterdir()]
    path = manifest.write(str(tmp_path / 'one.csv'), rows)
    with pytest.raises(config.UserError, match='at least 2 classes'):
        plan_for(**FAST, manifest=path)


def test_an_empty_class_folder_is_named_and_kept_only_when_allowed(tmp_path, capsys):
    write_class_folders(tmp_path / 'train', ['a', 'b'], 6)
    (tmp_path / 'train' / 'c_empty').mkdir()
    (tmp_path / 'train' / 'c_empty' / 'notes.txt').write_text('no image here')
    assert main.main(['train', f'--train-data-root={tmp_path / "train"}', f'--checkpoint-dir={tmp_path / "ck"}',
                      *fast_args()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "['c_empty']" in err[0] and '--allow-empty-classes' in err[0]
    assert not (tmp_path / 'ck').exists()
    plan = plan_for(**FAST, train_data_root=str(tmp_path / 'train'), allow_empty_classes=True)
    train_set, val_set = loaders.build_train_val(plan)
    assert train_set.classes == ['a', 'b', 'c_empty'] and set(train_set.targets) == {0, 1}
    assert 'c_empty' in capsys.readouterr().err  # still named, as a warning
