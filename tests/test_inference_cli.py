"""The evaluation and inference commands end to end on real image folders: the full report of testforacc,
predict's CSV, the SVM head, model fusion and k-fold training."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

import config
import main
from conftest import FAST, LEARNS, run_cli, train_test_settings, write_class_folders
from utils.train import engine
from utils.evaluate import loop
from utils.evaluate import loop as inference
from utils.evaluate.fusion import ensemble, member_probabilities
from utils.dashboard.client import Visualizer

CLASSES = ['00000', '00001', '00002']


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Two tiny trained checkpoints of different architectures and input sizes on the same data."""
    root = tmp_path_factory.mktemp('inference')
    common = train_test_settings(root, CLASSES)
    a = engine.fit(config.parse(run_name='resnet', **common, **{**LEARNS, 'max_epoch': 2}))  # it learns: no near ties
    b = engine.fit(config.parse(run_name='alex', **common, **{**FAST, 'model': 'AlexNet', 'image_size': 48}))
    return {'root': root, 'a': os.path.join(a, 'best_model.pth'), 'b': os.path.join(b, 'best_model.pth')}


def read_csv(path):
    return list(csv.DictReader(open(path, newline='')))


def test_testforacc_prints_and_writes_the_full_report(runs):
    res = run_cli('testforacc', f'--load-path={runs["a"]}', '--num-workers=0', '--vis=false')
    assert res.returncode == 0, res.stderr[-2000:]
    for text in ('precision', 'recall', 'macro avg', 'weighted avg', '00002', 'test: 12 images'):
        assert text in res.stdout
    run_dir = os.path.dirname(runs['a'])
    summary = json.load(open(os.path.join(run_dir, 'test_metrics.json')))
    assert summary['images'] == summary['n_samples'] == 12 and 'loss' in summary and summary['top5'] is None
    assert [c['name'] for c in summary['per_class']] == CLASSES and {'macro', 'weighted'} <= set(summary)
    assert sum(map(sum, summary['confusion'])) == 12
    rows = list(csv.reader(open(os.path.join(run_dir, 'test_confusion.csv'))))
    assert rows[0] == ['true\\predicted'] + CLASSES
    assert [r['class'] for r in read_csv(os.path.join(run_dir, 'test_per_class.csv'))] == CLASSES
    assert Image.open(os.path.join(run_dir, 'test_confusion.png')).format == 'PNG'


def test_testforacc_with_tta_writes_its_own_report(runs):
    cfg = config.parse(load_path=runs['a'], num_workers=0, vis=False, tta='five_crop', tta_merge='gmean')
    summary = loop.evaluate_checkpoint(cfg, 'test')
    assert summary['tta'] == 'five_crop' and summary['n_samples'] == 12
    assert os.path.isfile(os.path.join(os.path.dirname(runs['a']), 'test_tta-five_crop_confusion.png'))


def test_predict_csv_rows_follow_sorted_paths_in_nested_folders_and_list_an_unreadable_file(runs, tmp_path, capsys):
    src = runs['root'] / 'data' / 'test'
    images = tmp_path / 'images'
    (images / 'sub' / 'deeper').mkdir(parents=True)
    for name, origin in [('b.png', '00000/000.png'), ('sub/a.png', '00001/000.png'),
                         ('sub/deeper/c.png', '00002/000.png'), ('a.png', '00002/001.png')]:
        (images / name).write_bytes((src / origin).read_bytes())
    (images / 'sub' / 'broken.png').write_bytes(b'not an image')
    (images / 'notes.txt').write_text('not an image file name')
    out = tmp_path / 'pred.csv'
    assert main.main(['predict', f'--load-path={runs["a"]}', f'--data-root={images}', f'--output={out}',
                      '--num-workers=0', '--topk=2']) == 0
    stdout = capsys.readouterr().out
    rows = read_csv(out)
    assert [r['path'] for r in rows] == ['a.png', 'b.png', 'sub/a.png', 'sub/broken.png', 'sub/deeper/c.png']
    bad = rows[3]
    assert bad['index'] == '' and bad['class'] == '' and 'UnidentifiedImageError' in bad['error']
    for r in rows[:3] + rows[4:]:
        top = r['top2'].split(';')
        assert len(top) == 2 and top[0] == f'{r["class"]}:{r["confidence"]}'  # one rounding for every column
        assert CLASSES[int(r['index'])] == r['class'] and r['error'] == ''
    assert 'sub/broken.png' in stdout


def test_predict_on_a_flat_folder_is_deterministic(runs, tmp_path):
    images = tmp_path / 'flat'
    images.mkdir()
    for i, origin in enumerate(sorted((runs['root'] / 'data' / 'test' / '00001').iterdir())):
        (images / f'{9 - i}.png').write_bytes(origin.read_bytes())
    outs = []
    for name in ('one.csv', 'two.csv'):
        inference.predict(config.parse(load_path=runs['b'], data_root=str(images), output=str(tmp_path / name),
                                       num_workers=0, batch_size=3))
        outs.append((tmp_path / name).read_text())
    rows = read_csv(tmp_path / 'one.csv')
    assert [r['path'] for r in rows] == ['6.png', '7.png', '8.png', '9.png'] and outs[0] == outs[1]
    assert rows[0]['top3'].count(';') == 2  # topk is capped at the class count


def test_svm_command_saves_a_head_that_testforacc_and_predict_use(runs, tmp_path, capsys):
    assert main.main(['svm', f'--load-path={runs["a"]}', '--num-workers=0']) == 0
    stdout = capsys.readouterr().out
    assert 'softmax top-1' in stdout and 'svm top-1' in stdout
    head = os.path.join(os.path.dirname(runs['a']), 'best_model_svm.npz')
    assert os.path.isfile(head)
    fitted = json.load(open(head[:-4] + '.json'))
    summary = loop.evaluate_checkpoint(config.parse(load_path=runs['a'], num_workers=0, vis=False,
                                                      head='svm'), 'test')
    assert summary['head'] == 'svm' and summary['top1'] == pytest.approx(fitted['test']['svm_top1'])
    assert summary['loss'] is None
    out = tmp_path / 'svm.csv'
    inference.predict(config.parse(load_path=runs['a'], data_root=str(runs['root'] / 'data' / 'test'),
                                   output=str(out), num_workers=0, head='svm'))
    rows = read_csv(out)
    truth = [r['path'].split('/')[0] for r in rows]
    assert np.mean([r['class'] == t for r, t in zip(rows, truth)]) == pytest.approx(summary['top1'])


def test_ensemble_command_fuses_members_of_different_architectures_and_sizes(runs, tmp_path, capsys):
    out = tmp_path / 'ens.csv'
    assert main.main(['ensemble', f'--load-paths=[{runs["a"]},{runs["b"]}]', '--num-workers=0',
                      f'--output={out}', '--ensemble-weights=[2,1]']) == 0
    stdout = capsys.readouterr().out
    for text in ('member ResNet34 32px', 'member AlexNet 48px', 'soft vote (weights 2, 1)', 'hard vote'):
        assert text in stdout
    rows = read_csv(out)
    assert len(rows) == 12 and [r['path'] for r in rows] == sorted(r['path'] for r in rows)
    # each member runs at its own input size: the AlexNet member's probabilities are those predict gives
    cfg = config.parse(load_paths=[runs['a'], runs['b']], num_workers=0)
    members = [member_probabilities(cfg, path) for path in (runs['a'], runs['b'])]
    member = members[1]
    # the stacking row: a logistic regression on the validation probabilities, cross-validated there
    features = {split: np.concatenate([m[split]['probs'] for m in members], 1) for split in ('val', 'test')}
    y_val, y_test = members[0]['val']['labels'], members[0]['test']['labels']
    folds = min(5, np.bincount(y_val).min())
    folded = cross_val_predict(LogisticRegression(max_iter=1000), features['val'], y_val,
                               cv=StratifiedKFold(folds, shuffle=True, random_state=cfg.seed))
    test_pred = LogisticRegression(max_iter=1000).fit(features['val'], y_val).predict(features['test'])
    figures = [f'{100 * v:.2f}%' for v in ((folded == y_val).mean(), (test_pred == y_test).mean(),
                                           f1_score(y_test, test_pred, average='macro', labels=range(3),
                                                    zero_division=0))]
    row = [line for line in stdout.splitlines() if line.startswith('stacking (')]
    assert folds >= 2 and len(row) == 1
    assert row[0].split() == ['stacking', '(logistic', 'regression,', f'{folds}-fold', 'CV', 'on', 'val)', *figures]
    pred = tmp_path / 'alex.csv'
    inference.predict(config.parse(load_path=runs['b'], data_root=str(runs['root'] / 'data' / 'test'),
                                   output=str(pred), num_workers=0))
    assert np.allclose(member['test']['probs'].max(1), [float(r['confidence']) for r in read_csv(pred)],
                       atol=1e-5)


def test_svm_and_ensemble_validate_on_the_manifest_split(runs, tmp_path):
    from data import manifest
    train = str(runs['root'] / 'data' / 'train')
    rows = manifest.split_rows(config.parse(train_data_root=train, val_ratio=0.3))
    split = manifest.write(str(tmp_path / 'split.csv'), rows, ('path', 'label', 'split'))
    val_rows = sorted(r['path'] for r in rows if r['split'] == 'val')
    assert len(val_rows) == 9  # the folder split of train (--val-ratio=0.15) would hold out 6
    os.makedirs(tmp_path / 'ck')
    ckpt = str(tmp_path / 'ck' / 'best_model.pth')
    shutil.copy(runs['a'], ckpt)
    fitted = inference.fit_svm(config.parse(load_path=ckpt, manifest=split, num_workers=0))
    assert (fitted['train']['images'], fitted['val']['images']) == (21, 9)
    member = member_probabilities(config.parse(load_paths=[runs['a'], runs['b']], manifest=split, num_workers=0),
                                  runs['b'])
    assert sorted(member['val']['paths']) == val_rows


def test_svm_and_ensemble_refuse_training_data_of_other_classes(runs, tmp_path, capsys):
    renamed = str(write_class_folders(tmp_path / 'renamed', ['x', 'y', 'z'], 10))
    os.makedirs(tmp_path / 'ck')
    ckpt = str(tmp_path / 'ck' / 'best_model.pth')
    shutil.copy(runs['a'], ckpt)
    assert main.main(['svm', f'--load-path={ckpt}', f'--train-data-root={renamed}', '--num-workers=0']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "['x', 'y', 'z']" in err[0] and str(CLASSES) in err[0]
    assert os.listdir(tmp_path / 'ck') == ['best_model.pth']  # no head fitted on mislabelled features
    with pytest.raises(config.UserError, match="other classes"):
        ensemble(config.parse(load_paths=[runs['a'], runs['b']], train_data_root=renamed, num_workers=0))


def test_list_settings_reach_the_ensemble_as_lists(capsys):
    assert main.main(['ensemble', '--load-paths=[first.pth,second.pth]']) == 2
    assert 'checkpoint first.pth does not exist' in capsys.readouterr().err
    assert config.parse(**{'load-paths': "['a.pth', 'b.pth']"}).load_paths == ['a.pth', 'b.pth']
    assert main.main(['ensemble', '--load-paths=[only.pth]']) == 2
    assert 'two or more checkpoints' in capsys.readouterr().err


def test_testforacc_refuses_another_model_setting_than_the_checkpoints(runs, capsys):
    assert main.main(['testforacc', f'--load-path={runs["a"]}', '--model=alexnet', '--num-workers=0',
                      '--vis=false']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'error: {runs["a"]} was trained with --model=ResNet34; --model=AlexNet contradicts it (the '
                   f'architecture and the preprocessing come from the checkpoint): drop it']
    assert main.main(['testforacc', f'--load-path={runs["a"]}', '--model=resnet34', '--num-workers=0',
                      '--vis=false']) == 0  # the same model, in another case
    assert 'test: 12 images' in capsys.readouterr().out


@pytest.mark.parametrize('args, message', [
    (['predict'], 'give the folder of images to classify with --data-root'),
    (['testforacc', '--tta=flip'], "unknown --tta='flip'"),
    (['predict', '--head=knn', '--data-root=.'], "unknown --head='knn'"),
    (['testforacc', '--head=svm', '--tta=hflip'], '--tta works with the softmax head only'),
])
def test_bad_inference_settings_are_one_clear_line(args, message, runs, capsys):
    assert main.main(args + [f'--load-path={runs["a"]}']) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_kfold_training_holds_out_the_stratified_fold_as_validation(runs, capsys):
    train = str(runs['root'] / 'data' / 'train')
    cfg = config.parse(train_data_root=train, checkpoint_dir=str(runs['root'] / 'ck'), run_name='fold1',
                       kfold=3, fold=1, **FAST)
    run_dir = engine.fit(cfg)
    assert 'data: 20 training and 10 validation images' in capsys.readouterr().out
    stored = json.load(open(os.path.join(run_dir, 'config.json')))['used']
    assert stored['kfold'] == 3 and stored['fold'] == 1
    from data import loaders
    seen = []
    for fold in range(3):
        _, tr, va = loaders.train_val_samples(config.parse(train_data_root=train, kfold=3, fold=fold))
        assert not {p for p, _ in tr} & {p for p, _ in va}
        assert set(np.bincount([y for _, y in va])) <= {3, 4}  # stratified: 10 per class in 3 folds
        seen += [p for p, _ in va]
    assert len(seen) == len(set(seen)) == 30  # the folds cover the data once


def test_heatmap_without_a_server_is_a_silent_no_op():
    from utils.dashboard.server import free_port
    vis = Visualizer(port=free_port())
    assert not vis.active
    vis.heatmap('confusion', [[1, 0], [0, 1]], ['a', 'b'], ['a', 'b'])  # must not raise


def test_testforacc_draws_the_confusion_heatmap_on_a_running_dashboard(runs, tmp_path):
    from utils.dashboard.server import free_port, start_server, stop_server
    from utils.dashboard.assets import is_built
    if not is_built():
        pytest.skip("visdom's static files are missing (bash .ci/node.sh)")
    port = free_port()
    proc = start_server(port=port, env_path=tmp_path / 'visdom', timeout=30)
    try:
        summary = loop.evaluate_checkpoint(config.parse(load_path=runs['a'], num_workers=0, vis=True, vis_port=port,
                                                          env='report_test'), 'test')
        vis = Visualizer('report_test', port=port)
        trace = json.loads(vis.vis.get_window_data('test confusion', 'report_test'))['content']['data'][0]
    finally:
        stop_server(proc)
    assert trace['z'] == [[float(v) for v in row] for row in summary['confusion']][::-1]  # first class on top
    assert trace['y'] == CLASSES[::-1] and trace['x'] == CLASSES
