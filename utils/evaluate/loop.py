"""The one prediction loop and what runs on it: loading a checkpoint (or an exported file) for evaluation,
`evaluate` (loss, probabilities, targets of a loader; also training's per-epoch validation), test-time
augmentation and the SVM head as evaluation-time wrappers, the full report of `val` / `testforacc`, the `predict`
command (images -> CSV) and the `svm` command."""
import csv
import os

import numpy as np
import torch
from torch import nn

import config
import models
from config import UserError, for_evaluation, stored_plan
from data import loaders, transforms
from data.cache import finish_batch
from data.dataset import BadFileLog, ImageFolderDataset, require_folder
from utils.evaluate import calibrate
from utils.evaluate.conformal import prediction_sets
from utils.evaluate.exported import is_exported, load_exported
from utils.io import atomic, check_compatible, load_checkpoint, progress, walk_files, write_json
from utils.evaluate.metrics import (calibration, classification_summary, format_calibration, format_summary,
                                    write_summary)
from utils.evaluate.svm_head import fit_svm_head, load_svm_head, save_svm_head
from utils.evaluate.tta import TTAModel, build_tta
from utils.dashboard.client import Visualizer, server_up


def check_settings(cfg):
    """Refuse a combination of --tta and --head that cannot work, or a --topk below 1, before any work."""
    if cfg.head == 'svm' and cfg.tta != 'none':
        raise UserError('--tta works with the softmax head only; use --tta=none with --head=svm')
    if cfg.topk < 1:
        raise UserError(f'--topk must be at least 1, got {cfg.topk}')


def svm_head_path(load_path):
    """Where the SVM head of a checkpoint lives: checkpoints/<run>/best_model.pth -> best_model_svm.npz."""
    return os.path.splitext(os.path.abspath(load_path))[0] + '_svm.npz'


def svm_scores(head, feats, num_classes):
    """(n, num_classes) decision values of an SVM head whose argmax is the head's own prediction.

    sklearn's one-vs-rest values can break a tie in the pairwise votes differently from libsvm (which picks
    the lowest class index); the predicted class is lifted to the top so that both always agree."""
    dec = head.decision_function(feats)
    if dec.ndim == 1:
        dec = np.stack([-dec, dec], axis=1)
    scores = np.full((len(feats), num_classes), -1e3)
    scores[:, head.classes_.astype(int)] = dec
    pred = head.predict(feats).astype(int)
    rows = np.arange(len(feats))
    scores[rows, pred] = np.maximum(scores[rows, pred], scores.max(axis=1) + 1e-3)
    return scores


class EvalModel(nn.Module):
    """A classifier with test-time augmentation or an SVM head, returning LOG-probabilities: the evaluation
    loop's cross-entropy is then the log-loss of the merged probabilities and its softmax gives them back.
    With the SVM head the 'probabilities' are the softmax of its decision values (not calibrated)."""

    def __init__(self, model, image_size, tta='none', merge='mean', svm=None, flips=()):
        super().__init__()
        self.model, self.svm = model, svm
        flips = flips if tta == 'hflip' and svm is None else ()  # hflip follows the run's flip policy
        self.tta = TTAModel(model, None if svm is not None else build_tta(tta, image_size), merge, flips)

    def forward(self, x):
        if self.svm is None:
            return self.tta(x).clamp_min(1e-30).log()
        feats = self.model.forward_features(x).float().cpu().numpy()
        if feats.shape[1] != len(self.svm._arrays['mean']):
            raise UserError(f'the SVM head expects {len(self.svm._arrays["mean"])} features, the model gives '
                            f'{feats.shape[1]}; fit it again with `python main.py svm --load-path=...`')
        scores = torch.from_numpy(svm_scores(self.svm, feats, self.model.num_classes)).float().to(x.device)
        return scores.log_softmax(1)


def wrap(model, cfg):
    """The model as val / testforacc / predict use it: unchanged, or with --tta / --head=svm."""
    check_settings(cfg)
    if cfg.tta == 'none' and cfg.head == 'softmax':
        return model
    svm = None
    if cfg.head == 'svm':
        path = svm_head_path(cfg.load_path)
        if not os.path.isfile(path):
            raise UserError(f'no SVM head at {path}; fit one first with `python main.py svm '
                            f'--load-path={cfg.load_path}`')
        svm = load_svm_head(path)
    return EvalModel(model, cfg.image_size, cfg.tta, cfg.tta_merge, svm, cfg.flips).eval()


def report_prefix(split, cfg):
    """test, test_tta-five_crop, test_svm ...: runs with another head or TTA keep their own files."""
    return split + (f'_tta-{cfg.tta}' if cfg.tta != 'none' else '') + ('_svm' if cfg.head == 'svm' else '') \
        + exported_suffix(cfg)


def exported_suffix(cfg):
    """'_onnx' / '_torchscript' when an exported file is evaluated, so its reports sit beside the checkpoint's."""
    return f'_{cfg.exported}' if getattr(cfg, 'exported', None) else ''


def report(result, classes, cfg, split, badlog):
    """Print the full report of an evaluation (per-class table, averages, top-1 / top-5, most confused pairs)
    and write it beside the checkpoint: <prefix>_metrics.json, _per_class.csv, _confusion.csv, _confusion.png;
    the confusion heatmap also goes to the dashboard when a visdom server answers."""
    probs, targets = result['probs'], result['targets']
    if not len(targets):
        raise UserError(f'no readable image to evaluate ({badlog.summary() or "the folder is empty"})')
    summary = classification_summary(targets, probs.argmax(1), probs, classes)
    loss = None if cfg.head == 'svm' else result['loss']  # the log-loss of uncalibrated SVM scores means nothing
    summary.update(images=int(len(targets)), loss=loss, tta=cfg.tta, tta_merge=cfg.tta_merge, head=cfg.head,
                   calibration=None if cfg.head == 'svm' else calibration(probs, targets))
    print(format_summary(summary))
    if summary['calibration']:
        print(format_calibration(summary['calibration']))
    print(f'{split}: {summary["images"]} images' + (f', loss {loss:.4f}' if loss is not None else '')
          + f', top-1 {100 * summary["top1"]:.2f}%'
          + (f', top-5 {100 * summary["top5"]:.2f}%' if summary['top5'] is not None else '')
          + f', macro-F1 {100 * summary["macro"]["f1"]:.2f}%'
          + (f' (tta {cfg.tta}, {cfg.tta_merge})' if cfg.tta != 'none' else '')
          + (' (svm head)' if cfg.head == 'svm' else ''))
    out_dir = os.path.dirname(os.path.abspath(cfg.load_path))
    prefix = report_prefix(split, cfg)
    paths = write_summary(summary, out_dir, prefix)
    print(f'report written to {out_dir}/: ' + ', '.join(os.path.basename(p) for p in paths.values()))
    if cfg.vis and server_up(cfg.vis_server, cfg.vis_port):
        Visualizer(cfg.env, cfg.vis_server, cfg.vis_port).heatmap(
            f'{prefix} confusion', summary['confusion'], classes, classes,
            title=f'{prefix} confusion (rows = true, columns = predicted)')
    if badlog.summary():
        print(badlog.summary())
    return summary


def find_images(root):
    """Every image under `root` (flat or nested, any depth), sorted by relative path."""
    require_folder(root, 'give the images to classify with --data-root=FOLDER')
    found = [os.path.relpath(path, root) for path in walk_files(root)]
    if not found:
        raise UserError(f'{root} holds no images (jpg, png, ppm, bmp, tif, webp ...)')
    return sorted(found, key=lambda p: p.replace(os.sep, '/'))


def probabilities(model, paths, cfg, device, desc='predict', num_classes=None):
    """(probs, errors): softmax of the model for every path, a NaN row for a file that cannot be read (the rows
    have `num_classes` columns when no file can be read); errors maps such a path to the reason. The order of the
    rows is the order of `paths`."""
    dataset = ImageFolderDataset([(p, i) for i, p in enumerate(paths)], ['?'],
                                 transforms.eval_transform(cfg, cfg.image_size))
    badlog = BadFileLog()
    found = predictions(model, loaders.eval_loader(dataset, cfg), device, cfg, badlog, desc)
    width = found['probs'].shape[1] if len(found['keys']) else num_classes or 1
    probs = np.full((len(paths), width), np.nan)
    probs[found['keys']] = found['probs']
    return probs, badlog.seen


def write_predictions(path, names, probs, classes, topk, errors=None, preds=None, sets=None):
    """CSV, one row per image in the given order: path, index, class, confidence, top-k ('class:p' by
    descending p, separated by ';') and error (the reason a file could not be read, else empty); with `sets`
    (boolean rows, --coverage), the prediction set ('class;class', most likely first) and its size. Every
    probability is written with 6 decimals, so a class's confidence reads the same in both columns."""
    errors = errors or {}
    with atomic(path, newline='') as f:
        w = csv.writer(f)
        w.writerow(['path', 'index', 'class', 'confidence', f'top{topk}', 'error']
                   + (['set', 'set_size'] if sets is not None else []))
        for i, name in enumerate(names):
            p = probs[i]
            if np.isnan(p).any():
                w.writerow([name, '', '', '', '', errors.get(name, 'unreadable')]
                           + (['', ''] if sets is not None else []))
                continue
            k = int(p.argmax()) if preds is None else int(preds[i])
            order = [k] + [j for j in np.argsort(-p, kind='stable') if j != k][:topk - 1]
            members = [] if sets is None else [classes[j] for j in np.argsort(-p, kind='stable') if sets[i, j]]
            w.writerow([name, k, classes[k], f'{p[k]:.6f}', ';'.join(f'{classes[j]}:{p[j]:.6f}' for j in order), '']
                       + ([';'.join(members), len(members)] if sets is not None else []))


def predict(cfg):
    """Classify every image under --data-root (flat or nested) and write the predictions CSV."""
    if not cfg.data_root:
        raise UserError('give the folder of images to classify with --data-root=FOLDER')
    check_settings(cfg)
    given = cfg.given
    model, cfg, ckpt, device = load_for_eval(cfg)
    names = find_images(cfg.data_root)
    classes = ckpt['classes']
    model = wrap(model, cfg)
    calibration_set = conformal_calibration(cfg, given, classes) if cfg.coverage else None
    probs, errors = probabilities(model, [os.path.join(cfg.data_root, n) for n in names], cfg, device)
    errors = {os.path.relpath(p, cfg.data_root): reason for p, reason in errors.items()}
    sets = None
    if calibration_set:
        cal_probs, _ = probabilities(model, [p for p, _ in calibration_set], cfg, device, 'conformal: validation',
                                     len(classes))
        readable = ~np.isnan(cal_probs).any(1)
        targets = np.array([label for _, label in calibration_set])[readable]
        sets = prediction_sets(cal_probs[readable], targets, probs, cfg.coverage)
        valid = ~np.isnan(probs).any(1)
        print(f'prediction sets at coverage {cfg.coverage:g} (split conformal, LAC, calibrated on {readable.sum()} '
              f'validation images): mean size {sets[valid].sum(1).mean():.2f} classes')
    out = cfg.output or os.path.join(os.path.dirname(os.path.abspath(cfg.load_path)),
                                     f'predictions{exported_suffix(cfg)}.csv')
    write_predictions(out, names, probs, classes, min(cfg.topk, len(classes)), errors, sets=sets)
    print(f'predicted {len(names) - len(errors)} image(s) of {cfg.data_root}'
          + (f' (tta {cfg.tta})' if cfg.tta != 'none' else '') + (' with the svm head' if cfg.head == 'svm' else '')
          + f'; predictions in {out}')
    if errors:
        print(f'{len(errors)} unreadable image(s), listed in the CSV with an empty prediction: '
              + ', '.join(sorted(errors)[:10]) + (' ...' if len(errors) > 10 else ''))
    return out


def conformal_calibration(plan, given, classes):
    """The labelled images --coverage calibrates on: the validation split of the checkpoint's run (samples [(path,
    label)]); UserError before any work when its data is not here."""
    try:
        _, _, val = loaders.train_val_samples(loaders.resolve_roots(plan, given), classes)
    except UserError as e:
        raise UserError(f'--coverage calibrates on the validation split of the run, which is not here ({e}); give '
                        f'--train-data-root / --val-data-root of its labelled images') from None
    if len(val) < 20:
        raise UserError(f'--coverage needs a validation split of at least 20 labelled images to calibrate on; '
                        f'this run has {len(val)}')
    return val


def features(model, dataset, cfg, device, desc):
    """(penultimate features, softmax-head probabilities, labels) of every readable image of `dataset`."""
    found = predictions(model, loaders.eval_loader(dataset, cfg), device, cfg, BadFileLog(), desc, features=True)
    if not len(found['keys']):
        raise UserError(f'no readable image in the {desc} split')
    return found['feats'], found['probs'], found['keys']


def fit_svm(cfg):
    """Fit an SVM head on the penultimate features of --load-path (kind and C chosen on the validation split),
    print softmax-head and SVM-head accuracy side by side and save the head beside the checkpoint."""
    given = cfg.given
    model, cfg, ckpt, device = load_for_eval(cfg)
    cfg = loaders.resolve_roots(cfg, given)
    classes = ckpt['classes']
    _, train, val = loaders.train_val_samples(cfg, classes)
    tf = transforms.eval_transform(cfg, cfg.image_size)  # features of un-augmented training images
    splits = {'train': ImageFolderDataset(train, classes, tf), 'val': ImageFolderDataset(val, classes, tf)}
    test_root = cfg.data_root or cfg.test_data_root
    if os.path.isdir(test_root):
        splits['test'] = loaders.eval_dataset(cfg, test_root, classes)
    data = {name: features(model, ds, cfg, device, name) for name, ds in splits.items()}
    (ftr, _, ytr), (fval, _, yval) = data['train'], data['val']
    if len(np.unique(ytr)) < 2:
        raise UserError('the SVM head needs training images of at least two classes')
    print(f'fitting SVM heads on {len(ytr)} x {ftr.shape[1]} features ...')
    head, table = fit_svm_head(ftr, ytr, fval, yval)
    for kind, C, acc in table:
        print(f'  {kind:<6} C={C:<5g} validation accuracy {100 * acc:.2f}%')
    best_kind, best_c = next((k, c) for k, c, a in table if a == max(a for *_, a in table))
    path = svm_head_path(cfg.load_path)
    save_svm_head(head, path)
    saved = load_svm_head(path)  # report what the saved head predicts, as --head=svm will use it
    rows, out = [], {'kind': best_kind, 'C': best_c, 'path': path}
    print(f'\nchosen: {best_kind} C={best_c:g}; head saved to {path} (use it with --head=svm)\n')
    print(f'{"split":<6} {"images":>7} {"softmax top-1":>14} {"svm top-1":>10} {"softmax F1":>11} {"svm F1":>8}')
    for name, (f, p, y) in data.items():
        soft = classification_summary(y, p.argmax(1), class_names=classes)
        svm = classification_summary(y, saved.predict(f).astype(int), class_names=classes)
        out[name] = {'images': int(len(y)), 'softmax_top1': soft['top1'], 'svm_top1': svm['top1'],
                     'softmax_macro_f1': soft['macro']['f1'], 'svm_macro_f1': svm['macro']['f1']}
        rows.append(out[name])
        print(f'{name:<6} {len(y):>7} {100 * soft["top1"]:>13.2f}% {100 * svm["top1"]:>9.2f}% '
              f'{100 * soft["macro"]["f1"]:>10.2f}% {100 * svm["macro"]["f1"]:>7.2f}%')
    write_json(out, os.path.splitext(path)[0] + '.json')
    return out


@torch.no_grad()
def predictions(model, loader, device, cfg=None, badlog=None, desc='predict', criterion=None, features=False):
    """The one prediction loop, behind training's validation and every command that runs a model: the class
    probabilities of every readable image of `loader` with the loader's second field (`keys`: labels, or row
    indices), plus the mean `criterion` loss against the keys and the penultimate `feats` when asked.
    Batches from the cache are finished on the device (`cfg`); unreadable files are counted in `badlog`."""
    model.eval()
    probs, keys, feats, total_loss = [], [], [], 0.0
    for images, key, bad in progress(loader, desc):
        if badlog is not None:
            badlog.add(bad)
        if images is None:
            continue
        images = finish_batch(images, device, cfg, False) if cfg else images.to(device, non_blocking=True)
        output = model(images)
        if criterion is not None:
            total_loss += criterion(output, key.to(device, non_blocking=True)).item() * key.size(0)
        if features:
            feats.append(model.forward_features(images).float().cpu())
        probs.append(output.float().softmax(1).cpu())
        keys.append(key.cpu())
    return {'probs': torch.cat(probs).numpy() if probs else np.zeros((0, 1)),
            'keys': torch.cat(keys).numpy() if keys else np.zeros(0, dtype=np.int64),
            'feats': torch.cat(feats).numpy() if feats else None,
            'loss': total_loss / max(sum(len(k) for k in keys), 1)}


def evaluate(model, loader, criterion, device, badlog, desc='val', cfg=None):
    """Mean loss, accuracy, and the class probabilities and targets of every readable image."""
    found = predictions(model, loader, device, cfg, badlog, desc, criterion)
    probs, targets = found['probs'], found['keys']
    acc = float((probs.argmax(1) == targets).mean()) if len(targets) else 0.0
    return {'loss': found['loss'], 'acc': acc, 'probs': probs, 'targets': targets}


def load_for_eval(cfg):
    """(model on its device, plan, checkpoint, device) for --load-path: the plan it was trained with, the runtime
    settings of `cfg` on top (config.for_evaluation)."""
    if not cfg.load_path:
        raise config.UserError('give the checkpoint to evaluate with --load-path=PATH '
                               '(e.g. checkpoints/<run>/best_model.pth)')
    if is_exported(cfg.load_path):  # an exported .onnx / .torchscript file stands in for the model
        return load_exported(cfg)
    ckpt = load_checkpoint(cfg.load_path)
    check_compatible(ckpt, ckpt.get('model_name', cfg.model), path=cfg.load_path)
    plan = for_evaluation(stored_plan(ckpt), cfg, cfg.load_path)
    model = models.build(ckpt['model_name'], ckpt['num_classes'], attention=plan.attention, stem=plan.stem)
    model.load_state_dict(ckpt['model'])
    calibrate.apply(model, ckpt.get('temperature'))  # --calibrate=temperature: the logits divided by it
    device = torch.device(plan.device)
    return model.to(device), plan, ckpt, device


def evaluate_checkpoint(cfg, split, on_result=None):
    """Evaluate --load-path on the validation split ('val') or a labelled test folder ('test'); prints the
    full report and writes it (metrics json, per-class and confusion CSV, confusion PNG) beside the checkpoint;
    then calls `on_result(settings, plan, dataset, result, badlog)` when given. Returns the report's summary."""
    asked = cfg
    model, cfg, ckpt, device = load_for_eval(asked)
    model = wrap(model, cfg)  # --tta / --head=svm
    cfg = loaders.resolve_roots(cfg, asked.given)
    classes = ckpt['classes']
    if cfg.data_root:
        dataset = loaders.eval_dataset(cfg, cfg.data_root, classes)
    elif split == 'test':
        dataset = loaders.eval_dataset(cfg, cfg.test_data_root, classes)
    else:
        _, val_set = loaders.build_train_val(cfg, classes)
        dataset = val_set
    badlog = BadFileLog()
    result = evaluate(model, loaders.eval_loader(dataset, cfg), torch.nn.CrossEntropyLoss(), device, badlog, split,
                      cfg)
    summary = report(result, classes, cfg, split, badlog)
    if on_result is not None:
        on_result(asked, cfg, dataset, result, badlog)
    return summary
