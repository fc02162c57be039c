"""`export` to ONNX and TorchScript: what the graph takes and gives, the sidecar, the parity check, and the
exported files standing in for the checkpoint in predict, testforacc and val."""
import csv
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import config
import main
from conftest import FAST, train_test_settings, write_class_folders
from data import transforms
from utils.train import engine
from utils.evaluate import loop
from utils.evaluate import export
from utils.evaluate.exported import Exported, read_meta

CLASSES = ['00000', '00001', '00002']


@pytest.fixture(scope='module')
def shipped(tmp_path_factory):
    """A tiny trained SqueezeNet (dataset normalisation) exported to both formats."""
    root = tmp_path_factory.mktemp('export')
    run = engine.fit(config.parse(**train_test_settings(root, CLASSES), run_name='sq', normalize='dataset', **FAST))
    return {'root': root, 'ckpt': os.path.join(run, 'best_model.pth'), 'onnx': os.path.join(run, 'best_model.onnx'),
            'ts': os.path.join(run, 'best_model.torchscript')}


@pytest.fixture(scope='module')
def exported(shipped):
    import io
    import contextlib
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main.main(['export', f'--load-path={shipped["ckpt"]}', '--format=all', '--num-workers=0']) == 0
    return out.getvalue()


def pixels(paths, size=32):
    """Real images as the exported graph takes them: RGB scaled to 0..1, (N, 3, size, size) float32."""
    return torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert('RGB').resize((size, size)),
                                                     dtype=np.float32) / 255).permute(2, 0, 1) for p in paths])


def test_export_all_writes_both_files_with_their_sidecars_and_prints_the_parity_figure(shipped, exported):
    for fmt in ('onnx', 'torchscript'):
        assert f'{fmt}: parity with PyTorch on 6 images: max probability difference' in exported
        assert 'top-1 different on 0' in exported
    ckpt = torch.load(shipped['ckpt'], weights_only=True)
    for path in (shipped['onnx'], shipped['ts']):
        meta = json.load(open(path + '.json'))
        assert meta['classes'] == CLASSES and meta['image_size'] == 32
        assert meta['mean'] == ckpt['plan']['mean'] and meta['std'] == ckpt['plan']['std']
        assert meta['source']['sha256'] == hashlib.sha256(open(shipped['ckpt'], 'rb').read()).hexdigest()
        assert meta['sha256'] == hashlib.sha256(open(path, 'rb').read()).hexdigest()
    assert not [f for f in os.listdir(os.path.dirname(shipped['ckpt'])) if f.endswith('.tmp')]


@pytest.mark.filterwarnings('ignore:`torch.jit.load` is deprecated:FutureWarning')
def test_the_graph_takes_0_1_images_of_any_batch_and_returns_the_models_probabilities(shipped, exported):
    import onnxruntime
    model, cfg, _, _ = loop.load_for_eval(config.parse(load_path=shipped['ckpt']))
    test = sorted(str(p) for p in (shipped['root'] / 'data' / 'test').rglob('*.png'))
    images = pixels(test)
    with torch.no_grad():
        normalised = torch.stack([transforms.eval_transform(cfg, 32)(Image.open(p).convert('RGB')) for p in test])
        expected = model.eval()(normalised).softmax(1)
    session = onnxruntime.InferenceSession(shipped['onnx'], providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['images'] and session.get_inputs()[0].shape[0] == 'batch'
    graph = torch.jit.load(shipped['ts'])
    for batch in (images[:1], images):
        got = torch.from_numpy(session.run(None, {'images': batch.numpy()})[0])
        assert got.shape == (len(batch), 3) and torch.allclose(got.sum(1), torch.ones(len(batch)), atol=1e-5)
        assert torch.allclose(got, expected[:len(batch)], atol=1e-5)
        assert torch.allclose(graph(batch), expected[:len(batch)], atol=1e-5)


def test_predict_and_testforacc_take_the_exported_files_and_agree_with_the_checkpoint(shipped, exported, tmp_path):
    images = shipped['root'] / 'data' / 'test'
    classes = {}
    for key in ('ckpt', 'onnx', 'ts'):
        out = tmp_path / f'{key}.csv'
        assert main.main(['predict', f'--load-path={shipped[key]}', f'--data-root={images}', f'--output={out}',
                          '--num-workers=0']) == 0
        classes[key] = [(r['path'], r['class']) for r in csv.DictReader(open(out))]
    assert len(classes['ckpt']) == 12 and classes['onnx'] == classes['ckpt'] == classes['ts']
    run_dir = os.path.dirname(shipped['ckpt'])
    for key, prefix in (('ckpt', 'test'), ('onnx', 'test_onnx'), ('ts', 'test_torchscript')):
        assert main.main(['testforacc', f'--load-path={shipped[key]}', '--num-workers=0', '--vis=false']) == 0
    reports = [json.load(open(os.path.join(run_dir, f'{p}_metrics.json'))) for p in
               ('test', 'test_onnx', 'test_torchscript')]
    assert reports[0]['confusion'] == reports[1]['confusion'] == reports[2]['confusion']
    assert reports[1]['loss'] == pytest.approx(reports[0]['loss'], abs=1e-4)
    assert main.main(['val', f'--load-path={shipped["onnx"]}', '--num-workers=0', '--vis=false']) == 0
    assert os.path.isfile(os.path.join(run_dir, 'val_onnx_metrics.json'))


def test_the_parity_check_refuses_a_graph_that_differs_from_the_model(shipped, exported):
    other = engine.fit(config.parse(train_data_root=str(shipped['root'] / 'data' / 'train'), seed=1,
                                    checkpoint_dir=str(shipped['root'] / 'ck'), run_name='other', **FAST))
    model, cfg, ckpt, _ = loop.load_for_eval(config.parse(load_path=os.path.join(other, 'best_model.pth'),
                                                            num_workers=0))
    deployable = export.Deployable(model.eval(), *transforms.norm_stats(cfg))
    graph = Exported(shipped['onnx'], read_meta(shipped['onnx']))
    paths = export.parity_paths(cfg, ckpt['classes'])
    with pytest.raises(config.UserError, match=r'onnx: parity with PyTorch on 6 images: .*export refused'):
        export.verify(deployable, graph, paths, cfg, 'onnx')


def test_exported_files_and_settings_that_cannot_work_are_one_line(shipped, exported, tmp_path, capsys):
    lone = tmp_path / 'lone.onnx'
    shutil.copy(shipped['onnx'], lone)
    cases = [(['predict', f'--load-path={lone}', f'--data-root={tmp_path}'], 'lone.onnx.json is missing'),
             (['testforacc', f'--load-path={shipped["onnx"]}', '--head=svm'], '--head=svm and --tta=multiscale'),
             (['export', f'--load-path={shipped["ckpt"]}', '--format=tflite'], "unknown --format='tflite'"),
             (['export', f'--load-path={shipped["onnx"]}'], 'give the checkpoint to export'),
             (['export', f'--load-path={shipped["ckpt"]}', '--format=torchscript', '--int8'], 'give --format=onnx')]
    shutil.copy(shipped['onnx'] + '.json', tmp_path / 'lone.onnx.json.bak')
    before = sorted(os.listdir(os.path.dirname(shipped['ckpt'])))
    for args, message in cases:
        assert main.main(args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    meta = json.load(open(tmp_path / 'lone.onnx.json.bak'))
    meta['sha256'] = '0' * 64
    (tmp_path / 'lone.onnx.json').write_text(json.dumps(meta))
    assert main.main(['predict', f'--load-path={lone}', f'--data-root={tmp_path}']) == 2
    assert 'describes another file' in capsys.readouterr().err
    assert sorted(os.listdir(os.path.dirname(shipped['ckpt']))) == before


def test_hook_based_attention_exports_with_parity(tmp_path, capsys):
    write_class_folders(tmp_path / 'train', CLASSES, 6)
    run = engine.fit(config.parse(train_data_root=str(tmp_path / 'train'), checkpoint_dir=str(tmp_path / 'ck'),
                                  run_name='cbam', **{**FAST, 'model': 'ResNet34', 'attention': 'cbam'}))
    written = export.export(config.parse(load_path=os.path.join(run, 'best_model.pth'), num_workers=0))
    assert [os.path.basename(p) for p in written] == ['best_model.onnx', 'best_model.torchscript']
    assert capsys.readouterr().out.count('top-1 different on 0') == 2


@pytest.fixture(scope='module')
def learnt(tmp_path_factory):
    """A ResNet34 (CBAM, the defaults' architecture) that gets its validation split right (conftest.LEARNS)."""
    from conftest import LEARNS
    root = tmp_path_factory.mktemp('int8')
    data = write_class_folders(root / 'learn', CLASSES, 20)
    run = engine.fit(config.parse(train_data_root=str(data), checkpoint_dir=str(root / 'ck'), run_name='r',
                                  html_report=False, **LEARNS))
    return os.path.join(run, 'best_model.pth')


def test_int8_onnx_is_a_quarter_of_the_size_within_a_point_of_float32_and_evaluates_as_an_export(learnt, capsys):
    assert main.main(['export', f'--load-path={learnt}', '--format=onnx', '--int8', '--num-workers=0']) == 0
    out = capsys.readouterr().out
    int8, float32 = learnt.replace('.pth', '.int8.onnx'), learnt.replace('.pth', '.onnx')
    meta = read_meta(int8)
    q = meta['quantization']
    assert q['calibration_images'] == 51 and q['val_images'] == 9  # every training image (under 256), 9 held out
    assert q['val_top1'] >= q['val_top1_float32'] - 0.01 and f'top-1 {100 * q["val_top1"]:.2f}% on 9' in out
    assert os.path.getsize(int8) < 0.35 * os.path.getsize(float32)
    # the int8 graph is a different graph: its probabilities are close to float32's, not equal
    _, cfg, _, _ = loop.load_for_eval(config.parse(load_path=learnt, num_workers=0))
    images = pixels(export.parity_paths(cfg, CLASSES))  # the validation images
    a, b = Exported(float32, read_meta(float32)).probabilities(images), Exported(int8, meta).probabilities(images)
    assert 0 < (a - b).abs().max() < 0.2 and bool((a.argmax(1) == b.argmax(1)).all())
    assert main.main(['val', f'--load-path={int8}', '--num-workers=0']) == 0
    assert json.load(open(os.path.join(os.path.dirname(learnt), 'val_onnx-int8_metrics.json')))['top1'] == q['val_top1']


def test_an_int8_file_below_the_limit_is_refused_and_nothing_is_written(learnt, monkeypatch, capsys):
    monkeypatch.setattr(export, 'INT8_LOSS', -0.5)  # demand half a point *above* float32: no file can pass
    folder = os.path.dirname(learnt)
    for name in os.listdir(folder):
        if '.int8.' in name:
            os.remove(os.path.join(folder, name))
    before = sorted(os.listdir(folder))
    assert main.main(['export', f'--load-path={learnt}', '--format=onnx', '--int8', '--num-workers=0']) == 2
    err = capsys.readouterr().err
    assert 'int8 export refused, nothing written' in err and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(folder)) == before
