"""The report of a training run, `checkpoints/<run>/report.html`: one self-contained page (images inlined, its
style and script in the page, no request to anywhere) that describes the run's best_model.pth.

It is written at the end of `train`, by `python main.py report --run=checkpoints/<run>` for any run (it needs only
the files every run has: config.json, classes.json, metrics.jsonl, best_model.pth; lr.csv when present), and
`testforacc` adds its test section. Beside it: curves.png and report.json (the headline figures, the device and
the unreadable files met in training, and the test folder, kept when the report is written again).
"""
import base64
import dataclasses
import html
import io
import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch

import config
from data import loaders
from data.dataset import BadFileLog, collate
from data.transforms import norm_stats
from data.flips import describe as describe_flips
from data.mix import MixBatch
from utils.dashboard.windows import labelled_tile, unnormalize, worst_misclassified
from utils.evaluate import gradcam, loop
from utils.evaluate.metrics import calibration, classification_summary, format_calibration, reliability_png
from utils.io import png_bytes, read_jsonl, write_bytes, write_json

WORST = 8  # mistakes shown with their Grad-CAM maps, in the page and in the dashboard's Grad-CAM pane
MOSAIC = 32  # images in each mosaic
RUN_FILES = ('config.json', 'classes.json', 'metrics.jsonl', 'best_model.pth')

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1300px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ccc;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child,#headline td{text-align:left}th{background:#f4f4f4}th.sort{cursor:pointer}
th.sort:after{content:" \\2195";color:#999}.bar{display:inline-block;height:10px;background:#4a7bb7}
.note{color:#666}figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:12px}
img{max-width:100%}
"""
# click a column head of a sortable table to sort by it (numbers as numbers), again to reverse
SCRIPT = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], up = th.dataset.up !== '1';
  const key = r => r.cells[col].textContent, num = s => parseFloat(s);
  [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b), d = isNaN(num(x)) || isNaN(num(y)) ? x.localeCompare(y) : num(x) - num(y);
    return up ? d : -d;
  }).forEach(r => body.appendChild(r));
  th.dataset.up = up ? '1' : '0';
}));
"""


def page(title, body):
    """A complete HTML page with the report's style and the sortable-table script."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>')


def img(png, alt=''):
    """An <img> whose picture is inside the page (a data: URI)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def run_folder(run):
    """The run folder that --run names (the folder, or a file in it); UserError when it is not a training run."""
    if not run:
        raise config.UserError('give the run to report with --run=checkpoints/<run>')
    folder = run if os.path.isdir(run) else os.path.dirname(run) or '.'
    missing = [f for f in RUN_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise config.UserError(f'{folder} is not a training run folder (no {", ".join(missing)}); give '
                               f'--run=checkpoints/<run>')
    return folder


def grid(tiles, ncol=8):
    """Equal-sized CHW uint8 tiles in rows of `ncol`, on white, as one CHW uint8 picture."""
    from torchvision.utils import make_grid
    return make_grid(torch.from_numpy(np.stack(tiles)), nrow=ncol, padding=4, pad_value=255).numpy()


def figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=80, bbox_inches='tight')
    return buf.getvalue()


def curves(rows, lr_rows):
    """PNG of loss and accuracy per epoch (train, validation, EMA when used) and the learning rate per step."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(15, 4))
    epochs = [r['epoch'] for r in rows]
    for ax, key, label in zip(fig.subplots(1, 3)[:2], ('loss', 'acc'), ('loss', 'accuracy')):
        ax.plot(epochs, [r[f'train_{key}'] for r in rows], 'o-', label='train')
        ax.plot(epochs, [r[f'val_{key}'] for r in rows], 'o-', label='validation')
        if any(f'val_{key}_ema' in r for r in rows):
            ax.plot([r['epoch'] for r in rows if f'val_{key}_ema' in r],
                    [r[f'val_{key}_ema'] for r in rows if f'val_{key}_ema' in r], 's--', label='validation, EMA')
        ax.set(xlabel='epoch', ylabel=label, title=f'{label} per epoch')
        ax.grid(alpha=0.3)
        ax.legend()
    ax = fig.axes[2]
    if lr_rows:
        ax.plot([x for x, _ in lr_rows], [lr for _, lr in lr_rows])
    else:  # runs resumed from older files may lack lr.csv: the per-epoch value then
        ax.plot(epochs, [r['lr'] for r in rows], 'o-')
    ax.set(xlabel='epoch', ylabel='learning rate', title='learning rate per step', yscale='log')
    ax.grid(alpha=0.3)
    return figure_png(fig)


def reliability(cal, name):
    """PNG of the reliability diagram (metrics.reliability_png)."""
    out = io.BytesIO()
    reliability_png(cal, out, name)
    return out.getvalue()


def confusion(summary):
    """PNG of the confusion matrix: counts, and row-normalised (the recall of each true class)."""
    from matplotlib.figure import Figure
    cm = np.asarray(summary['confusion'])
    n, names = len(cm), summary['class_names']
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    side = min(20, 3 + 0.3 * n)
    fig = Figure(figsize=(2 * side + 1, side))
    labels = names if n <= 40 else [str(i) for i in range(n)]
    for ax, values, title, fmt in zip(fig.subplots(1, 2), (cm, norm), ('counts', 'row-normalised'),
                                      ('{:d}', '{:.2f}')):
        shown = ax.imshow(values, cmap='Blues', vmin=0, vmax=1 if values is norm else max(1, values.max()))
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        ax.set(title=title, xlabel='predicted', ylabel='true')
        if n <= 40:
            ax.set_xticks(range(n), labels, rotation=90)
            ax.set_yticks(range(n), labels)
        if n <= 20:
            for t in range(n):
                for p in range(n):
                    if cm[t, p]:
                        ax.text(p, t, fmt.format(values[t, p]), ha='center', va='center', fontsize=8,
                                color='white' if norm[t, p] > 0.5 else 'black')
    return figure_png(fig)


def table(head, rows, sortable=False):
    """An HTML table; cells are escaped."""
    cls = ' class="sortable"' if sortable else ''
    ths = ''.join(f'<th{" class=sort" if sortable else ""}>{html.escape(str(h))}</th>' for h in head)
    trs = ''.join('<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>' for c in r) + '</tr>' for r in rows)
    return f'<table{cls}><thead><tr>{ths}</tr></thead><tbody>{trs}</tbody></table>'


def pct(v):
    return f'{100 * v:.2f} %'


class Evaluation:
    """One split evaluated with best_model.pth: the dataset, the readable rows and their probabilities."""

    def __init__(self, name, root, dataset, result, bad):
        self.name, self.root, self.dataset, self.bad = name, root, dataset, dict(bad)
        self.probs, self.targets = result['probs'], result['targets']
        # evaluate() skips unreadable files: row k of probs is the k-th readable sample
        self.readable = [k for k, (path, _) in enumerate(dataset.samples) if path not in self.bad]
        self.summary = classification_summary(self.targets, self.probs.argmax(1), self.probs,
                                              dataset.classes) if len(self.targets) else None
        if self.summary:
            self.summary['calibration'] = calibration(self.probs, self.targets)

    def images(self, rows):
        """Normalised tensors of result rows `rows`, as the model saw them."""
        return torch.stack([self.dataset[self.readable[r]][0] for r in rows])


def evaluate(name, root, dataset, model, cfg, device, known=None):
    """An Evaluation of `dataset`; unreadable files in `known` (already reported by training) warn no second time."""
    badlog = BadFileLog()
    badlog.seen.update(known or {})
    result = loop.evaluate(model, loaders.eval_loader(dataset, cfg), torch.nn.CrossEntropyLoss(), device,
                             badlog, f'report: {name}', cfg)
    return Evaluation(name, root, dataset, result, badlog.seen)


def worst_rows(ev, model, layer, cfg, classes):
    """(CHW uint8 rows: image | Grad-CAM of the predicted class | of the true class, captions, paths) of the
    WORST mistakes of `ev`, lowest probability of the true class first."""
    rows = worst_misclassified(ev.probs, ev.targets, WORST)
    if not len(rows) or layer is None:
        return [], [], [ev.dataset.samples[ev.readable[r]][0] for r in rows]
    x = ev.images(rows).to(next(model.parameters()).device)
    preds, trues = ev.probs[rows].argmax(1), ev.targets[rows]
    maps = gradcam.class_maps(model, layer, x, preds), gradcam.class_maps(model, layer, x, trues)
    out, captions = [], []
    for k, image in enumerate(unnormalize(x, *norm_stats(cfg))):
        p, t, conf = classes[preds[k]], classes[trues[k]], ev.probs[rows[k]]
        out.append(np.concatenate([
            labelled_tile(image, [f'true {t} {conf[trues[k]]:.2f}', f'pred {p} {conf[preds[k]]:.2f}']),
            labelled_tile(gradcam.overlay(image, maps[0][k]), ['Grad-CAM of', f'pred {p}']),
            labelled_tile(gradcam.overlay(image, maps[1][k]), ['Grad-CAM of', f'true {t}'])], axis=2))
        captions.append(f'{t}->{p}')
    return out, captions, [ev.dataset.samples[ev.readable[r]][0] for r in rows]


def split_mosaic(ev, cfg, classes, seed):
    """MOSAIC images of the split (a seeded sample, in order), labelled true / predicted."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(ev.targets), min(MOSAIC, len(ev.targets)), replace=False))
    tiles = []
    for r, image in zip(rows, unnormalize(ev.images(rows), *norm_stats(cfg))):
        t, p = ev.targets[r], ev.probs[r].argmax()
        tiles.append(labelled_tile(image, [f'true {classes[t]}', f'pred {classes[p]}' + ('' if p == t else ' X')]))
    return grid(tiles)


def training_mosaic(train_set, cfg, classes):
    """One training batch through the run's pipeline, as the model receives it (augmented and mixed), seeded."""
    from torch.utils.data import DataLoader
    torch.manual_seed(cfg.seed)  # augmentation and mixing draw from torch's generator
    loader = DataLoader(train_set, batch_size=MOSAIC, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(cfg.seed))
    images, labels, _ = next(iter(loader))
    if images is None:
        return None, ''
    x, y_a, y_b, lam = MixBatch(cfg.cutmix_prob, cfg.cutmix_alpha, cfg.mixup_prob, cfg.mixup_alpha)(images, labels)
    tiles = [labelled_tile(image, [f'{classes[a]}' + (f' {lam:.2f}' if lam < 1 else ''),
                                   f'+ {classes[b]} {1 - lam:.2f}' if lam < 1 else ''])
             for image, a, b in zip(unnormalize(x, *norm_stats(cfg)), y_a.tolist(), y_b.tolist())]
    mixed = f'mixed with lambda = {lam:.2f} (label: share)' if lam < 1 else 'not mixed (this batch)'
    return grid(tiles), mixed


def changed_settings(stored):
    """(name, value, default) of every stored setting that differs from its default."""
    return [(name, stored[name], default) for name, default, *_ in config.settings()
            if name in stored and stored[name] != default]


def describe_device(device):
    """'cuda: <GPU name>' or 'cpu: <n> cores'."""
    if device.type == 'cuda':
        return f'cuda: {torch.cuda.get_device_name(device)}'
    return f'cpu: {os.cpu_count()} cores'


def read_rows(run_dir):
    """metrics.jsonl rows and (fractional epoch, learning rate) of every step in lr.csv (absent: [])."""
    rows = read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))
    lr_path, lr_rows = os.path.join(run_dir, 'lr.csv'), []
    if os.path.isfile(lr_path):
        with open(lr_path) as f:
            lr_rows = [(float(x), float(lr)) for _, x, lr in (line.strip().split(',') for line in f if line.strip())]
    if not rows:
        raise config.UserError(f'{run_dir}/metrics.jsonl is empty: the run has not finished an epoch yet')
    return rows, lr_rows


def write(run_dir, cli=None, vis=None, device=None, bad=None, test=None):
    """Write report.html, curves.png and report.json into `run_dir` for its best_model.pth; returns report.json's
    dict. `cli`: command-line settings (batch size, --use-gpu, --data-root = a labelled test folder); `vis`: the
    run's RunDashboard (gets the Grad-CAM pane); `device` and `bad` (unreadable files): from the training run;
    `test`: (root, dataset, result, bad) of an evaluation testforacc just made."""
    start = time.perf_counter()
    run_dir = run_folder(run_dir)
    # from train: the device training used, so that a missing CUDA is not announced a second time
    cli = cli if cli is not None else config.parse(**({} if device is None else {'use_gpu': device.type == 'cuda'}))
    test_root = cli.data_root if 'data_root' in cli.given else ''
    if test_root and not os.path.isdir(test_root):
        raise config.UserError(f'--data-root={test_root} is not a folder; give the labelled test folder (class '
                               f'sub-folders) to add a test section, or leave it out')
    rows, lr_rows = read_rows(run_dir)
    report_json = os.path.join(run_dir, 'report.json')
    previous = {}
    if os.path.isfile(report_json):
        with open(report_json) as f:
            previous = json.load(f)
    cli = dataclasses.replace(cli, load_path=os.path.join(run_dir, 'best_model.pth'), given=cli.given | {'load_path'})
    model, cfg, ckpt, run_device = loop.load_for_eval(cli)  # no cache: the report reads few training images
    cfg = loaders.resolve_roots(cfg, cli.given)
    classes = ckpt['classes']
    train_set, val_set = loaders.build_train_val(cfg, classes)
    training = dict(previous.get('training', {}))
    training['device'] = describe_device(device) if device is not None else training.get(
        'device', f'{"cuda" if cfg.use_gpu else "cpu"} (not recorded; from --use-gpu)')
    training['bad_files'] = {**training.get('bad_files', {}), **(bad or {})}

    evals = [evaluate('validation', '', val_set, model, cfg, run_device, bad)]
    if test is not None:
        evals.append(Evaluation('test', *test))
    else:
        root = test_root or (previous.get('test') or {}).get('root', '')
        if root and os.path.isdir(root):
            evals.append(evaluate('test', root, loaders.eval_dataset(cfg, root, classes), model, cfg, run_device))
    try:
        layer_name, layer = gradcam.target_layer(model, cfg.image_size)
        cam_note = f'Grad-CAM weighs layer <code>{html.escape(layer_name)}</code> of {html.escape(ckpt["model_name"])}.'
    except gradcam.Unsupported as e:
        layer_name, layer, cam_note = None, None, f'Grad-CAM skipped: {html.escape(str(e))}.'

    best = max(rows, key=lambda r: r['val_acc'])
    curves_png = curves(rows, lr_rows)
    out = dict(model=ckpt['model_name'], classes=len(classes), epochs=len(rows), best_epoch=best['epoch'],
               training=training, gradcam_layer=layer_name, worst={}, test=None)
    sections, worst_shown = [], None
    for ev in evals:
        html_part, worst = split_section(ev, model, layer, cfg, classes, cam_note)
        sections.append(html_part)
        out['worst'][ev.name] = worst[2]
        worst_shown = worst_shown or worst
        if ev.summary:
            key = 'val' if ev.name == 'validation' else 'test'
            out[key] = dict(top1=ev.summary['top1'], macro_f1=ev.summary['macro']['f1'], images=len(ev.targets),
                            root=os.path.abspath(ev.root) if ev.root else '',
                            **{k: ev.summary['calibration'][k] for k in ('ece', 'ece_adaptive', 'nll', 'brier')})
    bad_all = {**training['bad_files'], **{p: r for ev in evals for p, r in ev.bad.items()}}
    body = (headline(run_dir, cfg, ckpt, rows, out, evals, train_set)
            + f'<h2 id="curves">Curves</h2>{img(curves_png, "curves")}'
            + '<h2 id="training-images">Training images as the model received them</h2>'
            + training_section(train_set, cfg, classes)
            + ''.join(sections)
            + distribution(classes, [('train', train_set)] + [(ev.name, ev.dataset) for ev in evals])
            + '<h2 id="bad-files">Unreadable files skipped</h2>'
            + (table(('file', 'reason'), sorted(bad_all.items())) if bad_all else '<p>none</p>'))
    out['seconds'] = round(time.perf_counter() - start, 2)
    body += f'<p class="note">written {time.strftime("%Y-%m-%d %H:%M:%S")} in {out["seconds"]:.1f} s</p>'
    write_bytes(curves_png, os.path.join(run_dir, 'curves.png'))
    write_bytes(page(f'{ckpt["model_name"]}: {os.path.basename(os.path.abspath(run_dir))}', body).encode(),
                os.path.join(run_dir, 'report.html'))
    write_json(out, report_json)
    if vis is not None and worst_shown and worst_shown[0]:
        vis.show_gradcam(np.stack(worst_shown[0]), worst_shown[1])
    print(f'report: {os.path.join(run_dir, "report.html")} ({out["seconds"]:.1f} s)')
    return out


def headline(run_dir, cfg, ckpt, rows, out, evals, train_set):
    source = cfg.manifest or cfg.train_data_root
    sizes = ', '.join(f'{len(ev.dataset)} {ev.name}' for ev in evals)
    scores = [(f'{ev.name} (best_model.pth)', f'top-1 {pct(ev.summary["top1"])}, macro-F1 '
               f'{pct(ev.summary["macro"]["f1"])} on {len(ev.targets)} images'
               + (f' of {ev.root}' if ev.root else '')) for ev in evals if ev.summary]
    if len(evals) == 1:
        scores.append(('test', 'not run: `python main.py testforacc --load-path=<run>/best_model.pth` or '
                               '`report --data-root=TEST_FOLDER` adds it'))
    start = os.path.getmtime(os.path.join(run_dir, 'config.json'))
    wall = os.path.getmtime(os.path.join(run_dir, 'metrics.jsonl')) - start
    facts = [('run', os.path.abspath(run_dir)),
             ('data', f'{source}: {len(train_set)} training, {sizes} images; {len(ckpt["classes"])} classes; '
                      f'{cfg.image_size} px'),
             ('model', f'{ckpt["model_name"]}' + (f' with {cfg.attention}' if cfg.attention != 'none' else '')),
             *([('horizontal flips', f'--hflip={cfg.hflip}: {describe_flips(cfg.flips, ckpt["classes"])}')]
               if cfg.flips else []),
             ('best epoch', f'{out["best_epoch"]} of {len(rows)} (validation accuracy '
                            f'{pct(max(r["val_acc"] for r in rows))})'),
             *([('stopped early', f'after epoch {rows[-1]["epoch"]} of {cfg.max_epoch}: {rows[-1]["stopped"]}')]
               if rows[-1].get('stopped') else []),
             *scores,
             ('wall time', f'{wall / 60:.1f} min from the start to the last epoch (training passes: '
                           f'{sum(r["seconds"] for r in rows) / 60:.1f} min)'),
             ('images/s', f'{np.mean([r["images_per_s"] for r in rows]):.0f} (training, mean over epochs)'),
             ('device', out['training']['device'])]
    changed = changed_settings(config.stored_plan(ckpt).to_dict())
    return (f'<h1>{html.escape(ckpt["model_name"])} run {html.escape(os.path.basename(os.path.abspath(run_dir)))}'
            f'</h1><section id="headline">{table(("", ""), facts)}'
            f'<h3>Settings that differ from the defaults</h3>'
            + (table(('setting', 'value', 'default'), changed) if changed else '<p>none</p>') + '</section>')


def training_section(train_set, cfg, classes):
    mosaic, mixed = training_mosaic(train_set, cfg, classes)
    if mosaic is None:
        return '<p>the first training batch held no readable image</p>'
    return (f'<p class="note">{MOSAIC} images drawn through the run\'s training pipeline when this report was '
            f'written (augmentation {html.escape(cfg.augment)}, Mixup p={cfg.mixup_prob}, CutMix '
            f'p={cfg.cutmix_prob}); {mixed}</p>{img(png_bytes(mosaic), "training images")}')


def split_section(ev, model, layer, cfg, classes, cam_note):
    """The HTML of one evaluated split and its worst_rows."""
    key = 'val' if ev.name == 'validation' else 'test'
    head = f'<h2 id="{key}">{ev.name.capitalize()}: best_model.pth</h2>'
    if ev.summary is None:
        return head + '<p>no readable image</p>', ([], [], [])
    s = ev.summary
    worst = worst_rows(ev, model, layer, cfg, classes)
    confused = [(m['true_name'], m['predicted_name'], m['count']) for m in s['most_confused']]
    per_class = [(c['name'], f'{c["precision"]:.4f}', f'{c["recall"]:.4f}', f'{c["f1"]:.4f}', c['support'])
                 for c in s['per_class']]
    mistakes = (f'<p class="note">{cam_note} Each row: the image (true class and its probability, predicted class '
                f'and its probability), the map of the predicted class, the map of the true class.</p>'
                + ''.join(f'<figure>{img(png_bytes(r), c)}</figure>' for r, c in zip(worst[0], worst[1]))
                if worst[0] else f'<p>{"no misclassified image" if not worst[2] else cam_note}</p>')
    return (head + f'<p>top-1 {pct(s["top1"])}'
            + (f', top-5 {pct(s["top5"])}' if s['top5'] is not None else '')
            + f', macro-F1 {pct(s["macro"]["f1"])} on {len(ev.targets)} images</p>'
            + f'<h3 id="{key}-calibration">Calibration</h3><p>{html.escape(format_calibration(s["calibration"]))}: how '
              f'far the confidence of the predicted class is from how often it is right</p>'
            + img(reliability(s['calibration'], ev.name), 'reliability diagram')
            + f'<h3 id="{key}-confusion">Confusion matrix</h3>{img(confusion(s), "confusion matrix")}'
            + '<h4>Most confused (true -> predicted)</h4>'
            + (table(('true', 'predicted', 'images'), confused) if confused else '<p>none</p>')
            + f'<h3 id="{key}-per-class">Per class (click a column to sort)</h3>'
            + table(('class', 'precision', 'recall', 'F1', 'support'), per_class, sortable=True)
            + f'<h3 id="{key}-images">{ev.name.capitalize()} images, true / predicted (X: wrong)</h3>'
            + img(png_bytes(split_mosaic(ev, cfg, classes, cfg.seed)), f'{ev.name} images')
            + f'<h3 id="{key}-gradcam">Worst mistakes and where the model looked (Grad-CAM)</h3>{mistakes}'), worst


def distribution(classes, splits):
    """Images per class in every split, as a table with bars."""
    counts = [np.bincount(np.asarray(ds.targets, dtype=np.int64), minlength=len(classes)) for _, ds in splits]
    top = max(1, max(int(c.max()) for c in counts))
    cells = ''.join(
        f'<tr><td>{html.escape(name)}</td>' + ''.join(
            f'<td>{c[i]} <span class="bar" style="width:{100 * c[i] // top}px"></span></td>' for c in counts)
        + '</tr>' for i, name in enumerate(classes))
    ths = ''.join(f'<th>{html.escape(n)}</th>' for n, _ in splits)
    totals = ''.join(f'<td>{int(c.sum())}</td>' for c in counts)
    return (f'<h2 id="distribution">Class distribution</h2><table><thead><tr><th>class</th>{ths}</tr></thead>'
            f'<tbody>{cells}<tr><th>total</th>{totals}</tr></tbody></table>')


def add_test(asked, cfg, dataset, result, badlog):
    """testforacc's hook: put the test evaluation it just made (the settings `asked`, the plan `cfg`) into the run's
    report, when it evaluated the run's best_model.pth as the report describes it (no --tta, softmax head); nothing
    with --html-report=False."""
    if not cfg.html_report:
        return None
    run_dir = os.path.dirname(os.path.abspath(cfg.load_path))
    if not all(os.path.isfile(os.path.join(run_dir, f)) for f in RUN_FILES):
        return None  # a checkpoint outside a run folder
    if os.path.basename(cfg.load_path) != 'best_model.pth' or cfg.tta != 'none' or cfg.head != 'softmax':
        print(f'note: {run_dir}/report.html describes best_model.pth without --tta or --head=svm; not updated')
        return None
    root = cfg.data_root or cfg.test_data_root
    return write(run_dir, asked, test=(root, dataset, result, badlog.seen))


def image_paths(data_root):
    """(shown name, path) of every image in --data-root: a folder (any depth), one image file, or several image
    files separated by commas."""
    from utils.io import is_image_file
    from utils.evaluate.loop import find_images
    if not data_root:
        raise config.UserError('give the images to explain with --data-root=FOLDER (or an image file, or files '
                               'separated by commas)')
    if os.path.isdir(data_root):
        return [(name, os.path.join(data_root, name)) for name in find_images(data_root)]
    files = [data_root] if os.path.exists(data_root) else [p.strip() for p in data_root.split(',') if p.strip()]
    wrong = [p for p in files if not os.path.isfile(p) or not is_image_file(os.path.basename(p))]
    if wrong:
        raise config.UserError(f'--data-root: {", ".join(wrong[:3])} is not an image file or a folder; give a folder '
                               f'of images, an image file, or image files separated by commas')
    return [(p, p) for p in files]


def explain(cfg):
    """Grad-CAM of --load-path for every image of --data-root: one PNG per image (the image beside the map of its
    top-1 class) and index.html listing them with their top-k predictions. Returns the output folder."""
    if not cfg.load_path:
        raise config.UserError('give the checkpoint to explain with --load-path=checkpoints/<run>/best_model.pth')
    if cfg.topk < 1:
        raise config.UserError(f'--topk must be at least 1, got {cfg.topk}')
    paths, out = image_paths(cfg.data_root), output_folder(cfg)
    model, cfg, ckpt, device = loop.load_for_eval(cfg)
    classes = ckpt['classes']
    layer_name, layer = gradcam.target_layer(model, cfg.image_size)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out), prefix='.explain-')  # renamed to `out` once complete
    try:
        cards, skipped = explain_into(tmp, model, layer, paths, classes, cfg, device)
        if not cards:
            raise config.UserError(f'no readable image in --data-root={cfg.data_root} ('
                                   + '; '.join(f'{n}: {r}' for n, r in skipped[:3]) + ')')
        body = (f'<h1>Grad-CAM of {html.escape(ckpt["model_name"])}</h1><p>'
                f'{html.escape(os.path.abspath(cfg.load_path))}; layer <code>{layer_name}</code>; each image beside '
                f'the map of its top-1 class, with its top-{cfg.topk} predictions.</p>{"".join(cards)}')
        if skipped:
            body += '<h2>Unreadable files</h2><ul>' + ''.join(
                f'<li>{html.escape(n)}: {html.escape(r)}</li>' for n, r in skipped) + '</ul>'
        with open(os.path.join(tmp, 'index.html'), 'w') as f:
            f.write(page(f'Grad-CAM: {ckpt["model_name"]}', body))
        os.replace(tmp, out)  # an empty --output folder is replaced whole
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f'Grad-CAM of {len(cards)} image(s) (layer {layer_name}) -> {os.path.join(out, "index.html")}'
          + (f'; {len(skipped)} unreadable: ' + ', '.join(n for n, _ in skipped[:5]) if skipped else ''))
    return out


def output_folder(cfg):
    """Where explain writes: --output (a new or empty folder), else a new explain-<time> beside the checkpoint."""
    if not cfg.output:
        folder = os.path.dirname(os.path.abspath(cfg.load_path))
        return os.path.join(folder, f'explain-{time.strftime("%Y%m%d-%H%M%S")}')
    if os.path.exists(cfg.output) and (not os.path.isdir(cfg.output) or os.listdir(cfg.output)):
        raise config.UserError(f'--output={cfg.output} exists and is not an empty folder; give a new folder so that '
                               f'nothing in it is overwritten')
    return os.path.abspath(cfg.output)


def explain_into(folder, model, layer, paths, classes, cfg, device):
    """Write one PNG per readable image of `paths` into `folder`; returns (HTML figures, [(name, reason)] of the
    unreadable files)."""
    from data.dataset import load_rgb
    from data.transforms import eval_transform, norm_stats
    from utils.io import save_png
    from utils.dashboard.windows import labelled_tile, unnormalize
    transform, cards, skipped, side = eval_transform(cfg, cfg.image_size), [], [], max(gradcam.TILE, cfg.image_size)
    for start in range(0, len(paths), cfg.batch_size):
        batch, names = [], []
        for name, path in paths[start:start + cfg.batch_size]:
            try:
                batch.append(transform(load_rgb(path)))
                names.append(name)
            except (OSError, ValueError, SyntaxError) as e:
                skipped.append((name, f'{type(e).__name__}: {e}'))
        if not batch:
            continue
        images = torch.stack(batch).to(device)
        with torch.no_grad():
            probs = model(images).float().softmax(1).cpu().numpy()
        maps = gradcam.class_maps(model, layer, images, probs.argmax(1))
        for k, (name, p, image) in enumerate(zip(names, probs, unnormalize(images, *norm_stats(cfg)))):
            top = np.argsort(-p, kind='stable')[:min(cfg.topk, len(classes))]
            file = f'{len(cards):04d}_{os.path.splitext(name)[0].replace(os.sep, "__").replace("/", "__")}.png'
            save_png(np.concatenate([labelled_tile(image, ['image'], side), labelled_tile(
                gradcam.overlay(image, maps[k]), [f'Grad-CAM {classes[top[0]]}'], side)], axis=2), os.path.join(folder, file))
            cards.append(f'<figure><img src="{html.escape(file)}" alt=""><figcaption><b>{html.escape(name)}</b><br>'
                         + '<br>'.join(f'{html.escape(classes[j])}: {100 * p[j]:.1f} %' for j in top)
                         + '</figcaption></figure>')
    return cards, skipped
