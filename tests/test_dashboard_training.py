"""A short training run against a real visdom server: every window read back through visdom's own API,
the record a run leaves without a server, replay, a server killed mid-run, and the page in headless Chromium."""
import base64
import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

import config
from conftest import ROOT, run_cli, write_class_folders
from utils.train import engine
from utils.evaluate import loop
from utils.dashboard.server import dump_dom, find_chromium, free_port, screenshot, start_server, stop_server
from utils.dashboard.windows import WIN, RunDashboard
from utils.dashboard.replay import read_log, replay_run
from utils.dashboard.assets import is_built

pytestmark = pytest.mark.skipif(not is_built() and not __import__('shutil').which('npm'),
                                reason='npm is not installed and visdom\'s static files are missing (bash .ci/node.sh)')

CLASSES = ['00000', '00001', '00002']
RUN = dict(max_epoch=2, batch_size=8, num_workers=0, model='SqueezeNet', image_size=32, print_freq=2, seed=0)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp('data') / 'train', CLASSES, 12)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    port = free_port()
    proc = start_server(port=port, env_path=tmp_path_factory.mktemp('visdom_env'))
    yield port
    stop_server(proc)


@pytest.fixture(scope='module')
def client(server):
    import visdom
    return visdom.Visdom(port=server, use_incoming_socket=False, raise_exceptions=True)


def train(data, out, name, port, env, **extra):
    cfg = config.parse(train_data_root=str(data), checkpoint_dir=str(out), run_name=name, vis_port=port, env=env,
                       **{**RUN, **extra})
    return engine.fit(cfg)


@pytest.fixture(scope='module')
def live_run(data, server, tmp_path_factory):
    """Two epochs streamed to the server into env 'live'."""
    return train(data, tmp_path_factory.mktemp('ck'), 'live', server, 'live')


def window(client, win, env='live'):
    return json.loads(client.get_window_data(win, env))


def traces(client, win, env='live'):
    return {t['name']: t for t in window(client, win, env)['content']['data']}


def rows(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, 'metrics.jsonl'))]


def logged_steps(epochs):
    """Iterations a run logs: 30 training images (12 a class less 2 held out) make 4 batches of 8, and
    batches 0 and 2 of each epoch are logged (print_freq=2)."""
    return epochs * math.ceil(math.ceil(30 / RUN['batch_size']) / RUN['print_freq'])


def decode(src):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1]))))


def test_loss_window_has_one_point_per_logged_step_raw_and_smoothed(client, live_run):
    loss = traces(client, WIN['loss'])
    assert set(loss) == {'raw', 'smoothed'}
    assert len(loss['raw']['x']) == len(loss['smoothed']['x']) == logged_steps(2) == 4
    assert loss['raw']['x'] == sorted(loss['raw']['x'])
    raw, smooth = loss['raw']['y'], loss['smoothed']['y']
    assert smooth[0] == raw[0] and abs(smooth[1] - (0.8 * raw[0] + 0.2 * raw[1])) < 1e-9
    plotted = window(client, WIN['lr'])['content']['data'][0]['y']
    stepped = [float(line.split(',')[2]) for line in open(os.path.join(live_run, 'lr.csv'))]
    assert len(plotted) == 4 and len(set(plotted)) > 1  # the default onecycle schedule moves the rate
    assert all(any(abs(p - s) <= 1e-5 * s for s in stepped) for p in plotted)  # each one a rate that was used


def test_epoch_windows_show_train_and_validation_on_shared_axes(client, live_run):
    metrics = rows(live_run)
    for win, key in ((WIN['epoch_loss'], 'loss'), (WIN['epoch_acc'], 'acc')):
        lines = traces(client, win)
        assert set(lines) == {'train', 'validation'}
        assert lines['train']['x'] == lines['validation']['x'] == [1, 2]
        assert lines['train']['y'] == pytest.approx([r[f'train_{key}'] for r in metrics])
        assert lines['validation']['y'] == pytest.approx([r[f'val_{key}'] for r in metrics])


def test_confusion_heatmap_has_the_class_count_shape_and_counts_every_val_image(client, live_run):
    z = np.array(window(client, WIN['confusion'])['content']['data'][0]['z'])
    assert z.shape == (len(CLASSES), len(CLASSES)) and z.sum() == 2 * len(CLASSES)  # 2 val images a class
    accuracy = window(client, WIN['per_class'])['content']['data'][0]['y']
    assert accuracy == pytest.approx(list(np.diag(z) / z.sum(1)))
    assert np.trace(z) / z.sum() == pytest.approx(rows(live_run)[-1]['val_acc'])


def test_class_distribution_shows_train_and_validation_counts(client, live_run):
    bars = traces(client, WIN['classes'])
    assert bars['train']['y'] == [10, 10, 10] and bars['validation']['y'] == [2, 2, 2]
    assert bars['train']['x'] == CLASSES


def test_training_images_show_the_first_batch_un_normalised(client, live_run):
    content = window(client, WIN['batch'])['content']
    grid = decode(content['src'])
    assert grid.shape[1] == 8 * (64 + 4) and grid.shape[0] == 64 + 4  # 8 images of 32 px shown at 64 px
    # the demo images are dark noise with one bright square: un-normalised pixels are back in 0..255 with 230s
    assert grid.max() >= 225 and np.median(grid) < 80
    assert 'un-normalised' in content['caption']


def test_worst_misclassified_are_the_val_images_with_the_lowest_true_class_probability(client, live_run):
    import torch
    from data import loaders
    from data.transforms import eval_transform
    model, cfg, _, _ = loop.load_for_eval(config.parse(load_path=os.path.join(live_run, 'last.pth'),
                                                         num_workers=0))
    _, _, val = loaders.train_val_samples(loaders.resolve_roots(cfg))
    pixels = [np.asarray(Image.open(path).convert('RGB')) for path, _ in val]
    with torch.no_grad():  # the model after the last epoch, which the pane shows
        logits = model.eval()(torch.stack([eval_transform(cfg, cfg.image_size)(Image.fromarray(p)) for p in pixels]))
    probs, targets = torch.softmax(logits, 1).numpy(), np.array([t for _, t in val])
    order = np.argsort(probs[np.arange(len(val)), targets], kind='stable')
    wrong = [i for i in order if probs[i].argmax() != targets[i]]
    assert len(wrong) == round((1 - rows(live_run)[-1]['val_acc']) * len(val)) > 0, 'no mistake to show'
    content = window(client, WIN['worst'])['content']
    assert content['caption'] == 'true->predicted, worst first: ' + ', '.join(
        f'{CLASSES[targets[i]]}->{CLASSES[probs[i].argmax()]}' for i in wrong)
    grid = decode(content['src'])
    for k, i in enumerate(wrong):  # visdom's grid: 8 a row, 2 px padding; a tile is the image at 96 px + 2 text lines
        top, left = k // 8 * (96 + 26 + 4) + 3, k % 8 * (96 + 4) + 3
        shown = grid[top:top + 96, left:left + 96, :3].astype(int)
        assert np.abs(shown - pixels[i].repeat(3, 0).repeat(3, 1)).max() <= 1, f'tile {k} is not image {i}'


def test_text_pane_holds_the_config_and_one_line_per_epoch(client, live_run):
    text = window(client, WIN['log'])['content']
    assert "model = &#x27;SqueezeNet&#x27;" in text and 'print_freq = 2' in text
    assert text.count('ETA') == 2 and 'img/s' in text and 'epoch 2/2' in text


def test_windows_have_titles_and_axis_labels(client, live_run):
    for key in ('loss', 'lr', 'epoch_loss', 'epoch_acc', 'per_class', 'confusion', 'classes'):
        layout = window(client, WIN[key])['content']['layout']
        assert layout['title'].startswith(WIN[key]) and layout['xaxis']['title'] and layout['yaxis']['title']


def test_rerun_into_the_same_env_replaces_the_windows(client, live_run, data, server, tmp_path):
    replay_run(live_run, config.parse(vis_port=server, env='rerun'))  # env 'rerun' now holds a 2-epoch run
    before = set(json.loads(client.get_window_data(env='rerun')))
    assert len(before) == len(WIN)
    train(data, tmp_path, 'again', server, 'rerun', max_epoch=1)
    assert set(json.loads(client.get_window_data(env='rerun'))) == before
    assert traces(client, WIN['epoch_loss'], 'rerun')['train']['x'] == [1]
    assert len(traces(client, WIN['loss'], 'rerun')['raw']['x']) == logged_steps(1)


def test_no_server_one_warning_then_replay_reproduces_the_live_windows(client, live_run, data, tmp_path, capsys):
    run = train(data, tmp_path, 'offline', free_port(), 'offline')
    out = capsys.readouterr()
    assert out.out.count('warning: no visdom server') == 1 and 'Traceback' not in out.out + out.err
    assert len(rows(run)) == 2
    replay_run(run, config.parse(vis_port=client.port, env='replayed'))
    # same seed, same data: the run without a server recorded what the live run showed
    for key in ('loss', 'lr', 'epoch_loss', 'epoch_acc', 'per_class', 'confusion', 'classes', 'batch', 'worst'):
        live, replayed = window(client, WIN[key]), window(client, WIN[key], 'replayed')
        assert replayed['content'] == live['content'], key
    text = window(client, WIN['log'], 'replayed')['content']
    assert text.count('ETA') == 2 and 'offline' in text


def test_server_killed_mid_run_the_run_finishes_and_its_log_is_complete(data, tmp_path, capsys):
    port = free_port()
    proc = start_server(port=port, env_path=tmp_path / 'env')
    metrics = tmp_path / 'ck' / 'killed' / 'metrics.jsonl'

    def kill_after_first_epoch():
        while not (metrics.exists() and metrics.read_text().count('\n') >= 1):
            time.sleep(0.01)
        proc.kill()
        proc.wait()

    killer = threading.Thread(target=kill_after_first_epoch, daemon=True)
    killer.start()
    try:
        run = train(data, tmp_path / 'ck', 'killed', port, 'killed')
    finally:
        stop_server(proc)
    out = capsys.readouterr()
    assert out.out.count('stopped answering') == 1
    assert 'Traceback' not in out.out + out.err and 'Exception in user code' not in out.out
    assert len(rows(run)) == 2
    calls = read_log(os.path.join(run, 'visdom.log'))
    windows = [msg['win'] for _, msg in calls]
    assert windows.count(WIN['epoch_loss']) == windows.count(WIN['confusion']) == 2
    assert windows.count(WIN['loss']) == logged_steps(2)
    run_log = [msg for _, msg in calls if msg['win'] == WIN['log']]
    assert run_log[-1]['data'][0]['content'].count('ETA') == 2


def test_vis_false_records_nothing_and_prints_nothing(tmp_path, capsys):
    cfg = config.Plan.of(config.parse(vis=False, vis_port=free_port()))
    dashboard = RunDashboard(cfg, str(tmp_path), CLASSES)
    dashboard.step(0, 0, 4, 1.0, 0.1)
    dashboard.epoch({'epoch': 1}, {}, None)
    assert not dashboard.vis.active and os.listdir(tmp_path) == [] and capsys.readouterr().out == ''


@pytest.mark.skipif(find_chromium() is None, reason='chromium is not installed (bash .ci/chromium.sh installs it)')
def test_headless_chromium_renders_every_training_window(client, live_run, server, tmp_path):
    url = f'http://127.0.0.1:{server}/env/live'
    png = Image.open(screenshot(url, tmp_path / 'training.png', window_size=(1400, 1400))).convert('RGB')
    assert len(png.getcolors(maxcolors=1 << 20)) > 100
    dom = dump_dom(url, window_size=(1400, 1400))
    assert dom.count('js-plotly-plot') >= 7  # loss, lr, loss/epoch, acc/epoch, per-class, confusion, classes
    assert dom.count('data:image/png;base64') >= 2 and 'SqueezeNet' in dom


def test_dashboard_and_replay_commands_serve_the_page_and_push_a_recorded_run(live_run, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), 'dashboard', f'--port={port}',
                             f'--vis-env-path={tmp_path}'], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert f'http://localhost:{port}' in proc.stdout.readline()
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=10) as page:
            assert page.status == 200
        res = run_cli('replay', f'--run={live_run}', f'--vis-port={port}', '--env=cli')
        assert res.returncode == 0 and 'replayed' in res.stdout, res.stderr[-2000:]
        import visdom
        vis = visdom.Visdom(port=port, use_incoming_socket=False, raise_exceptions=True)
        assert set(json.loads(vis.get_window_data(env='cli'))) == set(WIN.values())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        stop_server(proc)
    res = run_cli('replay', f'--run={live_run}', f'--vis-port={port}')
    assert res.returncode == 2 and res.stderr.strip().count('\n') == 0 and 'python main.py dashboard' in res.stderr
