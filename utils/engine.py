"""The training and evaluation pipeline behind `train`, `val` and `testforacc`."""
import json
import os
import random
import time

import numpy as np
import torch
from tqdm import tqdm

import config
import models
from data import loaders, transforms
from data.dataset import BadFileLog
from data.samplers import build_sampler
from utils import checkpoint, distributed, fast, tricks
from utils.checkpoint_writer import CheckpointWriter, to_host
from utils.optim import build_optimizer, build_scheduler
from utils.panes import RunDashboard


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(cfg):
    """CUDA when asked for and present; otherwise the CPU (with one warning when CUDA was asked for)."""
    if cfg.use_gpu and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        return torch.device('cuda')
    if cfg.use_gpu:
        print('warning: --use-gpu given but CUDA is not available; running on the CPU')
    return torch.device('cpu')


def merge_given(stored, cfg):
    """A config from a checkpoint's stored settings, with the settings given on this command line on top."""
    values = dict(stored)
    values.update({k: getattr(cfg, k) for k in getattr(cfg, 'given', ())})
    merged = config.from_dict(values)
    merged.given = set(getattr(cfg, 'given', ()))
    return merged


class Running:
    """The epoch's summed loss and correct predictions, kept on the training device so that a step never waits
    for it; `read` copies them to the host (one synchronisation on CUDA) with the last step's loss."""

    def __init__(self, device):
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss x images, correct, last loss
        self.seen = 0

    def add(self, loss, output, labels):
        n, loss = labels.size(0), loss.detach().double()
        self.sums = torch.stack((self.sums[0] + loss * n, self.sums[1] + (output.argmax(1) == labels).sum(), loss))
        self.seen += n

    def read(self):
        """(mean loss, accuracy, last step's loss) of the images so far."""
        total, correct, last = self.sums.tolist()
        return total / max(self.seen, 1), correct / max(self.seen, 1), last


def train_step(model, images, labels, criterion, trainer, running, cfg, vis, step):
    """One training step, which never waits for the device: the batch finished on the device, mixed, forward,
    loss, backward and optimizer step (`trainer`), loss and correct predictions added to `running`.
    `step` = (batch index, batches in the epoch, epoch)."""
    images = fast.finish_batch(images, running.sums.device, cfg, True)
    labels = labels.to(running.sums.device, non_blocking=True)
    images, y_a, y_b, lam = trainer.mix(images, labels)
    vis.show_batch(images, labels)  # the first batch of the run only
    with trainer.precision.autocast():
        output = model(images)
        loss = tricks.mixed_criterion(criterion, output, y_a, y_b, lam)
    trainer.backward(loss, *step)
    running.add(loss, output, labels)


def train_one_epoch(model, loader, criterion, optimizer, schedule, device, epoch, cfg, vis, badlog, precision=None,
                    trainer=None):
    """One pass over the training data; returns mean loss, accuracy, image count and seconds. The loss and
    accuracy are read from the device every `print_freq` steps and at the end, nowhere else."""
    precision = precision or fast.Precision(None, device)
    model.train()
    trainer = trainer or tricks.Trainer(model, optimizer, schedule, cfg, precision=precision)
    running, start = Running(device), time.time()
    bar = tqdm(loader, desc=f'epoch {epoch + 1}/{cfg.max_epoch}', leave=False, dynamic_ncols=True)
    for i, (images, labels, bad) in enumerate(bar):
        badlog.add(bad)
        if images is None or len(labels) < 2:  # batch norm cannot train on a single image
            continue
        train_step(model, images, labels, criterion, trainer, running, cfg, vis, (i, len(loader), epoch))
        if i % cfg.print_freq == 0:
            loss, acc, last = running.read()
            bar.set_postfix(loss=f'{loss:.4f}', acc=f'{acc:.4f}')
            vis.step(epoch, i, len(loader), last, optimizer.param_groups[0]['lr'])
    loss, acc, _ = running.read()
    return {'loss': loss, 'acc': acc, 'images': running.seen, 'seconds': time.time() - start}


@torch.no_grad()
def evaluate(model, loader, criterion, device, badlog, desc='val', cfg=None):
    """Mean loss, accuracy, and the class probabilities and targets of every readable image."""
    model.eval()
    total_loss, probs, targets = 0.0, [], []
    for images, labels, bad in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        badlog.add(bad)
        if images is None:
            continue
        images = fast.finish_batch(images, device, cfg, False) if cfg else images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        output = model(images)
        total_loss += criterion(output, labels).item() * labels.size(0)
        probs.append(output.float().softmax(1).cpu())
        targets.append(labels.cpu())
    probs = torch.cat(probs).numpy() if probs else np.zeros((0, 1))
    targets = torch.cat(targets).numpy() if targets else np.zeros(0, dtype=np.int64)
    acc = float((probs.argmax(1) == targets).mean()) if len(targets) else 0.0
    return {'loss': total_loss / max(len(targets), 1), 'acc': acc, 'probs': probs, 'targets': targets}


def make_run_dir(cfg):
    name = cfg.run_name or f'{cfg.model.lower().replace("/", "-")}-{time.strftime("%Y%m%d-%H%M%S")}'
    run_dir = os.path.join(cfg.checkpoint_dir, name)
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def write_json(obj, path):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def fit(cfg):
    """Train a model as configured; returns the run directory (config, classes, metrics, checkpoints)."""
    resume = checkpoint.load(cfg.resume) if cfg.resume else None
    if resume is not None:
        checkpoint.check_compatible(resume, resume.get('model_name', cfg.model), path=cfg.resume)
        cfg = merge_given(resume['config'], cfg)
    ddp = distributed.setup(cfg)
    cfg = distributed.main_first(ddp, loaders.resolve_roots, cfg)
    set_seed(cfg.seed)
    cfg.attention = models.resolve_attention(cfg.model, cfg.attention, cfg.pretrained_path)  # 'auto' -> what is used
    cfg.normalize = transforms.normalize_name(cfg)
    train_set, val_set = loaders.build_train_val(cfg)
    classes = train_set.classes
    if resume is not None:
        checkpoint.check_compatible(resume, resume['model_name'], len(classes), cfg.resume, classes)
    device = distributed.device(ddp, select_device(cfg))
    run_dir = os.path.dirname(os.path.abspath(cfg.resume)) if resume is not None else \
        distributed.broadcast(ddp, make_run_dir(cfg) if ddp.is_main else None)
    print('settings:\n' + '\n'.join(f'  {k} = {v!r}' for k, v in cfg.to_dict().items()))
    if ddp.is_main:
        write_json(cfg.to_dict(), os.path.join(run_dir, 'config.json'))
        write_json(classes, os.path.join(run_dir, 'classes.json'))
    # rank 0 computes and writes the statistics; the others then read them
    distributed.main_first(ddp, transforms.prepare_normalization, cfg, train_set, val_set, run_dir)
    print(f'data: {len(train_set)} training and {len(val_set)} validation images, {len(classes)} classes, '
          f'{cfg.image_size} px; run directory {run_dir}')

    model = models.build(cfg.model, len(classes), pretrained_path='' if resume else cfg.pretrained_path,
                         attention=cfg.attention, freeze_backbone=cfg.freeze_backbone)
    model.to(device)
    net, precision = fast.setup(model, cfg, device, wrap=lambda m: distributed.wrap(m, cfg, ddp, device))
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = distributed.shard_sampler(build_sampler(train_set.targets, cfg, generator), ddp, generator, cfg.seed)
    train_loader = loaders.train_loader(train_set, cfg, sampler, generator)
    val_loader = loaders.eval_loader(distributed.shard_dataset(val_set, ddp), cfg)
    criterion = tricks.build_criterion(cfg, train_set.targets, len(classes)).to(device)
    optimizer = build_optimizer(model, cfg)
    schedule = build_scheduler(optimizer, cfg, tricks.steps_per_epoch(len(train_loader), cfg))
    start_epoch, best_acc = 0, -1.0
    if resume is not None:
        model.load_state_dict(resume['model'])
        optimizer.load_state_dict(resume['optimizer'])
        schedule.load_state_dict(resume['scheduler'])
        start_epoch, best_acc = resume['epoch'] + 1, resume['best_metric']
        print(f'resuming {cfg.resume} at epoch {start_epoch + 1} (best validation accuracy {best_acc:.4f})')
    vis = RunDashboard(cfg, run_dir, classes, start_epoch, enabled=ddp.is_main)
    vis.start(train_set, val_set)
    trainer = tricks.Trainer(model, optimizer, schedule, cfg, None, run_dir if ddp.is_main else None, precision)
    if resume is not None:
        trainer.load_state_dict(resume)
    badlog = BadFileLog()
    writer = CheckpointWriter()  # an epoch's checkpoints are written while the next one trains

    for epoch in range(start_epoch, cfg.max_epoch):
        generator.manual_seed(cfg.seed + epoch)  # the same epoch draws the same order, resumed or not
        set_seed(cfg.seed + epoch)  # and the same augmentations, mixes and dropout masks
        train = train_one_epoch(net, train_loader, criterion, optimizer, schedule, device, epoch, cfg, vis,
                                badlog, precision, trainer)
        distributed.sync_buffers(model, ddp)
        train = distributed.reduce_metrics(ddp, train)
        val = distributed.reduce_metrics(ddp, evaluate(model, val_loader, criterion, device, badlog, cfg=cfg))
        ema_val = trainer.evaluate_ema(evaluate, val_loader, criterion, device, badlog)
        ema_val = ema_val and distributed.reduce_metrics(ddp, ema_val)
        schedule.step_epoch(val['loss'])
        improved = val['acc'] > best_acc
        best_acc = max(best_acc, val['acc'])
        row = {'epoch': epoch + 1, 'train_loss': train['loss'], 'train_acc': train['acc'], 'val_loss': val['loss'],
               'val_acc': val['acc'], 'lr': optimizer.param_groups[0]['lr'], 'seconds': round(train['seconds'], 2),
               'images_per_s': round(train['images'] / max(train['seconds'], 1e-9), 1)}
        if ema_val is not None:
            row.update(val_loss_ema=ema_val['loss'], val_acc_ema=ema_val['acc'])
        if not ddp.is_main:
            continue
        with open(os.path.join(run_dir, 'metrics.jsonl'), 'a') as f:
            f.write(json.dumps(row) + '\n')
        state = {'model': model.state_dict(), 'model_name': model.model_name, 'num_classes': len(classes),
                 'classes': list(classes), 'config': cfg.to_dict(), 'epoch': epoch, 'best_metric': best_acc,
                 'optimizer': optimizer.state_dict(), 'scheduler': schedule.state_dict(),
                 'version': checkpoint.VERSION, **trainer.state_dict()}
        if getattr(cfg, 'norm_stats', None):
            state['normalization'] = cfg.norm_stats
        writer.wait()  # the previous epoch's files are on disk (a failed write stops the run here)
        state = to_host(state)  # a copy: the next epoch changes the weights while it is written
        writer.save(state, os.path.join(run_dir, 'last.pth'))
        if improved:
            writer.save({k: v for k, v in state.items() if k != 'ema'}, os.path.join(run_dir, 'best_model.pth'))
        ema_improved = trainer.save_best_ema(state, ema_val, run_dir)
        vis.epoch(row, val, val_set, badlog.seen)
        print(f'epoch {epoch + 1}/{cfg.max_epoch}: train loss {train["loss"]:.4f} acc {train["acc"]:.4f} | '
              f'val loss {val["loss"]:.4f} acc {val["acc"]:.4f}{" (best)" if improved else ""} | '
              + (f'EMA acc {ema_val["acc"]:.4f}{" (best)" if ema_improved else ""} | ' if ema_val else '') +
              f'{row["images_per_s"]:.0f} img/s, {train["seconds"]:.1f}s')
    writer.close()
    if badlog.summary():
        print(badlog.summary())
    print(f'best validation accuracy {best_acc:.4f}; checkpoints in {run_dir}')
    if trainer.report(best_acc, run_dir):
        print(trainer.report(best_acc, run_dir))
    distributed.teardown(ddp)
    return run_dir


def load_for_eval(cfg):
    """(model on its device, effective config, checkpoint) for --load-path."""
    if not cfg.load_path:
        raise ValueError('give the checkpoint to evaluate with --load-path=PATH (e.g. checkpoints/<run>/best_model.pth)')
    ckpt = checkpoint.load(cfg.load_path)
    checkpoint.check_compatible(ckpt, ckpt.get('model_name', cfg.model), path=cfg.load_path)
    eval_cfg = merge_given(ckpt.get('config', {}), cfg)
    eval_cfg.cache = 'none'  # one pass over the images: a cache would decode them (and the training set) first
    model = models.build(ckpt['model_name'], ckpt['num_classes'], attention=eval_cfg.attention)
    eval_cfg.norm_stats = ckpt.get('normalization')
    model.load_state_dict(ckpt['model'])
    device = select_device(eval_cfg)
    return model.to(device), eval_cfg, ckpt, device


def evaluate_checkpoint(cfg, split):
    """Evaluate --load-path on the validation split ('val') or a labelled test folder ('test'); prints the
    full report and writes it (metrics json, per-class and confusion CSV, confusion PNG) beside the checkpoint."""
    from utils import inference
    model, cfg, ckpt, device = load_for_eval(cfg)
    model = inference.wrap(model, cfg)  # --tta / --head=svm
    cfg = loaders.resolve_roots(cfg)
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
    return inference.report(result, classes, cfg, split, badlog)
