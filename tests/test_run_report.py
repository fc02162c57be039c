"""The run report (report.html), Grad-CAM and `explain`: real runs on tiny image folders, the real grad-cam package,
the report rendered in headless Chromium with the network off."""
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import config
import models
from conftest import FAST, run_cli, write_class_folders
from utils.train import engine
from utils.dashboard.server import dump_dom, find_chromium, free_port, screenshot
from utils.evaluate import gradcam
from utils.dashboard.windows import WIN
from utils.dashboard.replay import read_log

CLASSES = ['00000', '00001', '00002']
SECTIONS = ['headline', 'curves', 'training-images', 'val', 'val-calibration', 'val-confusion', 'val-per-class',
            'val-images', 'val-gradcam', 'distribution', 'bad-files']
REPORT_FILES = ('report.html', 'report.json', 'curves.png')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A 2-epoch SqueezeNet run on 3 classes, with a corrupt training image, its dashboard recorded (no server)."""
    root = tmp_path_factory.mktemp('report')
    data = root / 'data'
    write_class_folders(data / 'train', CLASSES, 10, seed=0)
    write_class_folders(data / 'test', CLASSES, 4, seed=1)
    (data / 'train' / '00001' / 'broken.png').write_bytes(b'not a png')
    cfg = config.parse(train_data_root=str(data / 'train'), checkpoint_dir=str(root / 'ck'), run_name='tiny',
                       **{**FAST, 'max_epoch': 2, 'vis': True, 'vis_port': free_port()})
    return {'dir': Path(engine.fit(cfg)), 'data': data}


def report(run_dir):
    with open(os.path.join(run_dir, 'report.html')) as f:
        return f.read()


def report_json(run_dir):
    with open(os.path.join(run_dir, 'report.json')) as f:
        return json.load(f)


class Links(HTMLParser):
    """Every src / href of the page, and the ids of its elements."""

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ('src', 'href') if attrs.get(k)]
        if attrs.get('id'):
            self.ids.add(attrs['id'])


def parsed(text):
    links = Links()
    links.feed(text)
    return links


def test_train_leaves_a_self_contained_report_with_every_section(run):
    text = report(run['dir'])
    page = parsed(text)
    assert set(SECTIONS) <= page.ids
    assert page.links and all(link.startswith('data:image/png;base64,') for link in page.links)
    assert not re.search(r'(https?:)?//[a-z0-9.-]+\.[a-z]{2,}', text, re.I)  # no address of another machine
    assert Image.open(os.path.join(run['dir'], 'curves.png')).size[0] > 600
    assert 'broken.png' in text  # the unreadable training image met during training is listed
    assert 'SqueezeNet' in text and 'max_epoch' in text  # headline: the model and a setting changed from its default


def test_report_figures_are_those_of_best_model_pth(run):
    rows = [json.loads(line) for line in open(os.path.join(run['dir'], 'metrics.jsonl'))]
    out = report_json(run['dir'])
    best = max(rows, key=lambda r: r['val_acc'])
    assert out['best_epoch'] == best['epoch'] and out['epochs'] == 2
    assert out['val']['top1'] == pytest.approx(best['val_acc'])  # the report evaluates best_model.pth anew
    assert out['val']['nll'] == pytest.approx(best['val_nll'], abs=1e-5)  # and its calibration, as training did
    assert out['val']['ece'] == pytest.approx(best['val_ece'], abs=1e-5)
    assert out['test'] is None
    assert out['gradcam_layer'] == 'features.12'  # SqueezeNet's small form (auto at 32 px): the deepest block at
    # least 4 cells wide (32 -> 16 -> 8 -> 4 through its three poolings)


def test_the_dashboard_gets_a_gradcam_pane_of_the_reports_worst_mistakes(run):
    calls = [msg for _, msg in read_log(os.path.join(run['dir'], 'visdom.log')) if msg.get('win') == WIN['gradcam']]
    assert len(calls) == 1
    shown = re.search(r'true->predicted: (.*)$', calls[0]['opts']['caption']).group(1).split(', ')
    worst = report_json(run['dir'])['worst']['validation']
    assert len(shown) == len(worst) > 0
    classes = [os.path.basename(os.path.dirname(p)) for p in worst]
    assert [s.split('->')[0] for s in shown] == classes  # same images, same order


def test_testforacc_adds_its_test_section_and_report_keeps_it(run):
    best = os.path.join(run['dir'], 'best_model.pth')
    res = run_cli('testforacc', f'--data-root={run["data"] / "test"}', f'--load-path={best}', '--num-workers=0')
    assert res.returncode == 0, res.stderr
    with open(os.path.join(run['dir'], 'test_metrics.json')) as f:
        tested = json.load(f)
    out = report_json(run['dir'])
    assert out['test']['top1'] == pytest.approx(tested['top1']) and out['test']['images'] == 12
    assert {'test', 'test-confusion', 'test-per-class', 'test-gradcam'} <= parsed(report(run['dir'])).ids
    res = run_cli('report', f'--run={run["dir"]}', '--num-workers=0')  # the test folder is remembered
    assert res.returncode == 0, res.stderr
    assert report_json(run['dir'])['test']['top1'] == pytest.approx(tested['top1'])


def test_testforacc_with_html_report_false_writes_no_report(run, tmp_path):
    quiet = tmp_path / 'quiet'
    shutil.copytree(run['dir'], quiet, ignore=shutil.ignore_patterns(*REPORT_FILES, 'test_*', 'visdom.log'))
    res = run_cli('testforacc', f'--data-root={run["data"] / "test"}', f'--load-path={quiet / "best_model.pth"}',
                  '--num-workers=0', '--html-report=False')
    assert res.returncode == 0, res.stderr
    assert (quiet / 'test_metrics.json').exists()
    assert not any((quiet / f).exists() for f in REPORT_FILES), 'testforacc wrote a report it was told not to'


def test_report_works_on_a_run_that_has_none_of_the_report_files(run, tmp_path):
    old = tmp_path / 'old'
    shutil.copytree(run['dir'], old, ignore=shutil.ignore_patterns(*REPORT_FILES, 'test_*', 'visdom.log'))
    res = run_cli('report', f'--run={old}', '--num-workers=0')
    assert res.returncode == 0, res.stderr
    assert set(SECTIONS) <= parsed(report(old)).ids
    assert 'not recorded' in report(old)  # the training device is not in the run's files


@pytest.mark.parametrize('args, message', [
    (['--run=nowhere'], 'not a training run folder'),
    (['--run=RUN', '--data-root=missing_folder'], '--data-root=missing_folder is not a folder'),
])
def test_report_refuses_bad_input_in_one_line_before_writing(run, tmp_path, args, message):
    old = tmp_path / 'old'
    shutil.copytree(run['dir'], old, ignore=shutil.ignore_patterns(*REPORT_FILES))
    res = run_cli('report', *[a.replace('RUN', str(old)) for a in args], cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not any((old / f).exists() for f in REPORT_FILES)


PROBE = ("<script>window.addEventListener('load', () => { const p = document.createElement('pre'); p.id = 'probe';"
         "p.textContent = JSON.stringify({requests: performance.getEntriesByType('resource').map(e => e.name),"
         "broken: [...document.images].filter(i => !i.naturalWidth).length, images: document.images.length});"
         "document.body.appendChild(p); });</script>")
# every request goes to a proxy on a closed local port: nothing can leave the machine
OFFLINE = ['--proxy-server=http://127.0.0.1:9', '--proxy-bypass-list=<-loopback>']


def rendered(html_text, folder):
    """(what the page requested and how many of its images failed to load, the DOM) in headless Chromium."""
    path = folder / 'probe.html'
    path.write_text(html_text.replace('</body>', PROBE + '</body>'))
    dom = dump_dom(path.as_uri(), args=OFFLINE)
    return json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom).group(1)), dom


@pytest.mark.skipif(find_chromium() is None, reason='chromium is not installed (bash .ci/chromium.sh installs it)')
def test_chromium_renders_every_section_offline_without_a_request(run, tmp_path):
    # the probe sees a page's requests, even failed ones: a page with remote images is caught
    probe, _ = rendered('<html><body><img src="http://example.com/a.png"></body></html>', tmp_path)
    assert probe['requests'] == ['http://example.com/a.png'] and probe['broken'] == 1
    probe, dom = rendered(report(run['dir']), tmp_path)
    assert probe['requests'] == [] and probe['broken'] == 0 and probe['images'] >= 6
    assert set(SECTIONS) <= parsed(dom).ids
    png = screenshot((run['dir'] / 'report.html').as_uri(), tmp_path / 'report.png', args=OFFLINE)
    shot = Image.open(png).convert('RGB')
    assert len(shot.getcolors(maxcolors=1 << 20)) > 200  # text, curves and pictures, not a blank page


def test_explain_writes_an_overlay_and_the_top_k_per_image_and_lists_unreadable_files(run, tmp_path):
    images = tmp_path / 'new'
    shutil.copytree(run['data'] / 'test' / '00002', images / 'nested')
    (images / 'broken.jpg').write_bytes(b'not a jpeg')
    out = tmp_path / 'explained'
    res = run_cli('explain', f'--load-path={run["dir"] / "best_model.pth"}', f'--data-root={images}',
                  f'--output={out}', '--topk=2', '--num-workers=0')
    assert res.returncode == 0, res.stderr
    pngs = sorted(p.name for p in out.glob('*.png'))
    assert len(pngs) == 4 and all('nested__' in p for p in pngs)
    tile = np.asarray(Image.open(out / pngs[0]))
    assert tile.shape[1] == 2 * tile.shape[0] - 2 * 14  # the image beside its overlay, a caption strip under each
    index = (out / 'index.html').read_text()
    assert index.count('<figure>') == 4 and 'broken.jpg' in index
    assert len(re.findall(r'<br>0000[0-2]: \d+\.\d %', index)) == 4 * 2  # top-2 under each image
    assert all(src.endswith('.png') and '/' not in src for src in parsed(index).links)


def test_explain_refuses_an_output_folder_that_holds_files_before_any_work(run, tmp_path):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    res = run_cli('explain', f'--load-path={run["dir"] / "best_model.pth"}', f'--data-root={run["data"] / "test"}',
                  f'--output={out}')
    assert res.returncode == 2 and 'not an empty folder' in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ['notes.txt'] and not list(tmp_path.glob('.explain-*'))


@pytest.mark.parametrize('name', models.list_models())
def test_every_registered_model_gets_a_gradcam_map(name):
    model = models.build(name, 2)
    layer_name, layer = gradcam.target_layer(model, 64)
    maps = gradcam.class_maps(model, layer, torch.randn(1, 3, 64, 64), [1])
    assert maps.shape == (1, 64, 64) and np.isfinite(maps).all()


def test_a_model_without_a_convolutional_map_is_named_and_skipped():
    with pytest.raises(gradcam.Unsupported, match='vit_tiny_patch16_224'):
        gradcam.target_layer(models.build('timm/vit_tiny_patch16_224', 2), 224)


def region_images(n, size, seed):
    """Noise images of 2 classes: class 0 has a bright square at a random place inside the top-right quadrant,
    class 1 has none. Evidence for class 1 is an absence, which has no place, so only class 0's maps are checked."""
    rng, half, side = np.random.default_rng(seed), size // 2, size // 8
    x = rng.uniform(0, 0.5, (n, 3, size, size)).astype(np.float32)
    y = np.arange(n) % 2
    for i in np.flatnonzero(y == 0):
        r, c = rng.integers(0, half - side, 2)
        x[i, :, r:r + side, half + c:half + c + side] = 1.0
    return torch.from_numpy((x - 0.25) / 0.3), torch.from_numpy(y)


# a fresh batch every step: on a fixed set of 64 noise images ConvNeXt learns the noise, not the square
@pytest.mark.parametrize('name,steps', [('timm/resnet10t', 20), ('timm/convnext_atto', 100)])
def test_gradcam_lights_the_one_region_a_trained_model_depends_on(name, steps):
    size, half = 64, 32
    torch.manual_seed(0)
    model = models.build(name, 2)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for step in range(steps):
        x, y = region_images(16, size, seed=100 + step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for m in model.modules():  # batch-norm statistics of the final weights, not a running mean over the steps
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(region_images(64, size, seed=0)[0])
    model.eval()
    test_x, test_y = region_images(32, size, seed=1)
    with torch.no_grad():
        assert (model(test_x).argmax(1) == test_y).float().mean() >= 0.9  # it learned the task
    _, layer = gradcam.target_layer(model, size)
    maps = gradcam.class_maps(model, layer, test_x[test_y == 0], test_y[test_y == 0])
    inside = maps[:, :half, half:].sum((1, 2)) / maps.sum((1, 2))  # the quadrant is a quarter of the image
    assert inside.mean() > 0.6 and inside.min() > 0.4
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps]
    assert all(r < half <= c for r, c in peaks)  # every map peaks inside the quadrant
