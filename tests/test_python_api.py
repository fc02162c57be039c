"""The Python API: main.train returns the run, main.load classifies paths, PIL images, numpy arrays and torch
tensors as `predict` does, for a checkpoint and its exported files; the example of docs/python.md runs."""
import contextlib
import csv
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import config
import main
from conftest import LEARNS, ROOT, write_class_folders

CLASSES = ['00000', '00001', '00002']


@pytest.fixture(scope='module')
def shipped(tmp_path_factory):
    """A run trained through main.train, exported to ONNX and TorchScript, and a folder of new images."""
    root = tmp_path_factory.mktemp('api')
    data = write_class_folders(root / 'learn', CLASSES, 20)
    new = write_class_folders(root / 'new', CLASSES, 4, seed=1)
    run = main.train(**LEARNS, train_data_root=str(data), checkpoint_dir=str(root / 'ck'), run_name='r',
                     html_report=False)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main.main(['export', f'--load-path={run.best_model}', '--format=all', '--num-workers=0']) == 0
    return run, str(new)


def test_train_returns_the_run_with_its_folder_best_accuracy_and_checkpoints(shipped):
    run, _ = shipped
    assert os.path.basename(run.dir) == 'r' and run.best_model == os.path.join(run.dir, 'best_model.pth')
    assert os.path.isfile(run.best_model) and os.path.isfile(run.last) and run.best_model_ema == ''
    assert run.best_val_acc == torch.load(run.best_model, weights_only=True)['best_metric']


def predicted_csv(path, folder, out):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main.main(['predict', f'--load-path={path}', f'--data-root={folder}', f'--output={out}',
                          '--num-workers=0']) == 0
    with open(out) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize('suffix', ['.pth', '.onnx', '.torchscript'])
def test_a_path_pil_image_numpy_array_and_tensor_are_classified_as_predicts_csv(shipped, suffix, tmp_path):
    run, folder = shipped
    path = os.path.splitext(run.best_model)[0] + suffix
    rows = predicted_csv(path, folder, tmp_path / 'p.csv')
    paths = [os.path.join(folder, r['path']) for r in rows]
    model = main.load(path, num_workers=0)
    assert model.classes == CLASSES
    arrays = [np.asarray(Image.open(p).convert('RGB')) for p in paths]
    kinds = {'folder': folder, 'paths': paths, 'pil': [Image.open(p) for p in paths], 'numpy': arrays,
             'numpy batch': np.stack(arrays), 'tensor batch': torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)}
    expected = [r['class'] for r in rows]
    assert len(set(expected)) > 1  # the model tells the classes apart: a constant answer would agree trivially
    for kind, images in kinds.items():
        probs = model.predict_proba(images)
        assert model.predict(images) == expected, kind
        assert [f'{p.max():.6f}' for p in probs] == [r['confidence'] for r in rows], kind
        assert np.allclose(probs.sum(1), 1, atol=1e-5)


def test_an_unreadable_file_gets_nan_and_none_as_predict_leaves_its_row_empty(shipped, tmp_path):
    run, folder = shipped
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not an image')
    good = os.path.join(folder, CLASSES[0], '000.png')
    model = main.load(run.best_model, num_workers=0)
    probs = model.predict_proba([good, str(broken)])
    assert not np.isnan(probs[0]).any() and np.isnan(probs[1]).all()
    assert model.predict([good, str(broken)])[1] is None


def test_mistakes_raise_user_error_with_the_command_lines_message(shipped, tmp_path):
    run, _ = shipped
    with pytest.raises(config.UserError, match='--patience must be 0 or more'):
        main.train(patience=-1, checkpoint_dir=str(tmp_path))
    with pytest.raises(config.UserError, match='does not exist'):
        main.load(str(tmp_path / 'missing.pth'))
    with pytest.raises(config.UserError, match='uint8'):
        main.load(run.best_model).predict(np.zeros((8, 8, 3), np.float64))
    assert not os.listdir(tmp_path)


def test_the_example_of_docs_python_md_runs_as_written(tmp_path):
    code = re.search(r'```python\n(.*?)```', open(os.path.join(ROOT, 'docs', 'python.md')).read(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == '(360, 10)'
    assert lines[-2] == "['3', '3', '3']"
