"""Calibration of the probabilities: ECE (equal-width and adaptive bins), NLL, Brier and the reliability diagram,
in val / testforacc and in training's per-epoch validation."""
import json
import os

import numpy as np
import pytest

import config
import main
from conftest import LEARNS, write_class_folders
from utils.evaluate.metrics import calibration
from utils.train import engine


def top_label(confidence, correct, classes=3):
    """Probability rows whose predicted class is 0 at `confidence`, and targets right where `correct`."""
    n = len(confidence)
    probs = np.tile((1 - confidence)[:, None] / (classes - 1), (1, classes))
    probs[:, 0] = confidence
    targets = np.where(correct, 0, 1 + np.arange(n) % (classes - 1))
    return probs, targets


def test_ece_nll_and_brier_of_a_small_case_by_hand():
    # two images at 0.9 (one right), two at 0.6 (both right): each bin is off by 0.4 -> ECE 0.4
    probs, targets = top_label(np.array([0.9, 0.9, 0.6, 0.6]), np.array([True, False, True, True]))
    cal = calibration(probs, targets)
    assert cal['ece'] == pytest.approx(0.4)
    # adaptive bins hold equal counts: 15 bins of 4 images are 4 bins of one, off by 0.1, 0.9, 0.4, 0.4
    assert cal['ece_adaptive'] == pytest.approx(0.45) and calibration(probs, targets, bins=2)['ece_adaptive'] == \
        pytest.approx(0.4)
    assert cal['nll'] == pytest.approx(-np.mean(np.log([0.9, 0.05, 0.6, 0.6])))
    assert cal['brier'] == pytest.approx(np.mean([((probs[i] - np.eye(3)[targets[i]]) ** 2).sum() for i in range(4)]))
    assert cal['reliability'] == [dict(confidence=pytest.approx(0.6), accuracy=1.0, images=2),
                                  dict(confidence=pytest.approx(0.9), accuracy=0.5, images=2)]


def test_a_calibrated_model_has_ece_near_zero_and_an_overconfident_one_its_gap():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.4, 1.0, 20000)
    calibrated = calibration(*top_label(confidence, rng.random(20000) < confidence))
    overconfident = calibration(*top_label(confidence, rng.random(20000) < confidence - 0.2))
    assert calibrated['ece'] < 0.015 and calibrated['ece_adaptive'] < 0.015
    assert overconfident['ece'] == pytest.approx(0.2, abs=0.015) and overconfident['nll'] > calibrated['nll']


def test_a_confidence_of_exactly_one_falls_in_the_last_bin_and_counts_every_image():
    probs, targets = top_label(np.array([1.0, 1.0, 0.5, 1 / 15]), np.array([True, True, False, False]))
    cal = calibration(probs, targets)
    assert sum(r['images'] for r in cal['reliability']) == 4
    assert cal['reliability'][-1] == dict(confidence=1.0, accuracy=1.0, images=2)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp('cal')
    data = write_class_folders(root / 'learn', ['00000', '00001', '00002'], 20)
    return engine.fit(config.parse(train_data_root=str(data), checkpoint_dir=str(root / 'ck'), run_name='r',
                                   html_report=False, **LEARNS))


def test_training_rows_carry_the_validation_calibration_that_val_reports_for_the_same_weights(run, capsys):
    row = json.loads(open(os.path.join(run, 'metrics.jsonl')).readline())
    assert main.main(['val', f'--load-path={os.path.join(run, "best_model.pth")}', '--num-workers=0']) == 0
    out = capsys.readouterr().out
    cal = json.load(open(os.path.join(run, 'val_metrics.json')))['calibration']
    assert row['val_nll'] == pytest.approx(cal['nll'], abs=1e-5) and row['val_ece'] == pytest.approx(cal['ece'], abs=1e-5)
    assert f'calibration: ECE {100 * cal["ece"]:.2f}% (15 bins' in out
    assert open(os.path.join(run, 'val_reliability.png'), 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_temperature_recovers_the_factor_that_made_a_model_overconfident():
    from utils.evaluate.calibrate import fit
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 3
    targets = np.array([rng.choice(5, p=np.exp(z) / np.exp(z).sum()) for z in logits])  # calibrated at T = 1
    sharp = np.exp(2.5 * logits)
    t, record = fit(sharp / sharp.sum(1, keepdims=True), targets)
    assert t == pytest.approx(2.5, rel=0.05)
    assert record['ece_after'] < 0.03 < 0.1 < record['ece_before'] and record['nll_after'] < record['nll_before']


@pytest.fixture(scope='module')
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp('temp')
    data = write_class_folders(root / 'learn', ['00000', '00001', '00002'], 20)
    return engine.fit(config.parse(train_data_root=str(data), checkpoint_dir=str(root / 'ck'), run_name='r',
                                   html_report=False, calibrate='temperature', **LEARNS))


def test_calibrate_temperature_stores_the_fit_and_every_evaluation_applies_it(calibrated, capsys):
    import torch
    best = os.path.join(calibrated, 'best_model.pth')
    ckpt = torch.load(best, weights_only=True)
    record = ckpt['calibration']
    assert ckpt['temperature'] == record['temperature'] != 1.0 and record['images'] == 9
    assert record['nll_after'] <= record['nll_before']  # the fit minimises the validation NLL
    row = json.loads(open(os.path.join(calibrated, 'metrics.jsonl')).readline())
    assert record['nll_before'] == pytest.approx(row['val_nll'], abs=1e-5)  # fitted on those very predictions
    assert main.main(['val', f'--load-path={best}', '--num-workers=0']) == 0
    capsys.readouterr()
    metrics = json.load(open(os.path.join(calibrated, 'val_metrics.json')))
    assert metrics['calibration']['nll'] == pytest.approx(record['nll_after'], abs=1e-5)
    assert metrics['top1'] == row['val_acc']  # a temperature never changes the predicted class
    # the exported graph divides by it too: the same probabilities as the checkpoint, and the sidecar says so
    assert main.main(['export', f'--load-path={best}', '--format=onnx', '--num-workers=0']) == 0
    onnx = os.path.join(calibrated, 'best_model.onnx')
    assert json.load(open(onnx + '.json'))['temperature'] == ckpt['temperature']
    folder = os.path.join(os.path.dirname(os.path.dirname(calibrated)), 'learn')
    a, b = main.load(best, num_workers=0).predict_proba(folder), main.load(onnx).predict_proba(folder)
    assert np.abs(a - b).max() < 1e-4


def test_conformal_sets_cover_the_true_class_at_the_asked_rate_over_calibration_draws():
    from utils.evaluate.conformal import prediction_sets
    rng = np.random.default_rng(0)

    def draw(n):  # a model whose probabilities are the true ones, and one that is over-confident
        logits = rng.normal(size=(n, 6)) * 2
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        y = (p.cumsum(1) < rng.random((n, 1))).sum(1)
        sharp = np.exp(3 * logits)
        return p, sharp / sharp.sum(1, keepdims=True), y

    for which in (0, 1):
        covered = []
        for _ in range(20):
            cal, test = draw(500), draw(2000)
            sets = prediction_sets(cal[which], cal[2], test[which], 0.9)
            covered.append(sets[np.arange(2000), test[2]].mean())
        # split conformal: 0.9 <= expected coverage <= 0.9 + 1 / (n + 1); 20 draws of 2000 test images
        assert 0.9 - 0.006 < np.mean(covered) < 0.9 + 1 / 501 + 0.006, (which, np.mean(covered))


def test_predict_coverage_writes_sets_of_the_most_likely_classes_and_bad_values_are_one_line(tmp_path, capsys):
    import csv
    data = write_class_folders(tmp_path / 'learn', ['00000', '00001', '00002'], 20)
    run = engine.fit(config.parse(train_data_root=str(data), checkpoint_dir=str(tmp_path / 'ck'), run_name='r',
                                  html_report=False, val_ratio=0.4, **LEARNS))
    best, out = os.path.join(run, 'best_model.pth'), tmp_path / 'p.csv'
    assert main.main(['predict', f'--load-path={best}', f'--data-root={data}', f'--output={out}', '--coverage=0.9',
                      '--num-workers=0']) == 0
    assert 'calibrated on 24 validation images' in capsys.readouterr().out
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 60
    for row in rows:
        p = dict(item.split(':') for item in row['top3'].split(';'))
        members = row['set'].split(';') if row['set'] else []
        assert int(row['set_size']) == len(members)
        # a LAC set holds every class above a threshold: no class outside it is likelier than one inside
        assert all(float(p[m]) >= float(p[o]) for m in members for o in p if o not in members)
    for arg, message in (('--coverage=1.5', '--coverage is a probability below 1'),
                         ('--coverage=-0.1', '--coverage is a probability below 1')):
        assert main.main(['predict', f'--load-path={best}', f'--data-root={data}', arg]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
