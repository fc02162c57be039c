"""The training and evaluation pipeline behind `train`, `val` and `testforacc`."""
import itertools
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
from models import pretrained
from config import merge_given, select_device
from utils.dashboard.windows import RunDashboard
from utils.evaluate.loop import evaluate
from utils.io import (TMP_PREFIX, VERSION, append_line, check_compatible, check_room, estimated_size, load_checkpoint,
                      save_checkpoint, write_json, write_text)
from utils.train import distributed
from utils.train.checkpoint_writer import CheckpointWriter, to_host
from utils.train.optim import build_optimizer, build_scheduler
from utils.train.precision import Precision, setup
from utils.train.step import (Running, Trainer, best_ema_state, build_criterion, steps_per_epoch, train_mode,
                              train_step)

LAST, BEST, BEST_EMA = 'last.pth', 'best_model.pth', 'best_model_ema.pth'


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_one_epoch(model, loader, criterion, optimizer, schedule, device, epoch, cfg, vis, badlog, precision=None,
                    trainer=None):
    """One pass over the training data; returns mean loss, accuracy, image count and seconds. The loss and
    accuracy are read from the device every `print_freq` steps and at the end, nowhere else."""
    precision = precision or Precision(None, device)
    train_mode(model)
    trainer = trainer or Trainer(model, optimizer, schedule, cfg, precision=precision)
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
    trainer.flush(epoch)
    loss, acc, _ = running.read()
    return {'loss': loss, 'acc': acc, 'images': running.seen, 'seconds': time.time() - start}


def make_run_dir(cfg, prefix=None):
    """A new run directory under cfg.checkpoint_dir that no other run uses: --run-name (refused when it holds files),
    else <prefix, default the model>-<date>-<time>, with -2, -3, ... when runs start in the same second. os.mkdir
    is atomic, so of two processes that race for one name, one gets it and the other the next."""
    if cfg.run_name:
        run_dir = os.path.join(cfg.checkpoint_dir, cfg.run_name)
        os.makedirs(os.path.dirname(run_dir), exist_ok=True)
        try:
            os.mkdir(run_dir)
        except FileExistsError:
            if not os.path.isdir(run_dir) or os.listdir(run_dir):
                last = os.path.join(run_dir, LAST)
                hint = f'resume it with --resume={last}, or ' if os.path.isfile(last) else ''
                raise config.UserError(f'{run_dir} already holds another run; {hint}give a new --run-name') from None
        return run_dir
    os.makedirs(cfg.checkpoint_dir, exist_ok=True)
    prefix = prefix or cfg.model.lower().replace("/", "-")
    base = os.path.join(cfg.checkpoint_dir, f'{prefix}-{time.strftime("%Y%m%d-%H%M%S")}')
    for n in itertools.count(1):
        run_dir = base if n == 1 else f'{base}-{n}'
        try:
            os.mkdir(run_dir)
            return run_dir
        except FileExistsError:
            continue


def open_run_dir(cfg, resume, num_classes):
    """The run directory once it is known to have room for the checkpoints: a new one, or for --resume the run's
    own, first made consistent with the last.pth it resumes from (repair_run)."""
    size = estimated_size(models.parameter_count(cfg.model, num_classes, cfg.attention, cfg.stem), cfg.ema)
    if resume is None:
        check_room(cfg.checkpoint_dir, 3 * size)  # last.pth, best_model.pth, the next save's temporary
        return make_run_dir(cfg)
    run_dir = os.path.dirname(os.path.abspath(cfg.resume))
    check_room(run_dir, size)  # the checkpoints exist; a save needs room for its temporary file
    repair_run(run_dir, resume)
    return run_dir


def repair_run(run_dir, ckpt):
    """Make a run killed at any moment consistent with its last.pth `ckpt`: remove the temporary files of unfinished
    writes, drop the metrics.jsonl and lr.csv rows of the epoch it did not finish, and write the best checkpoints
    that `ckpt` counts (its best metric) but the kill left unwritten -- their weights are the ones in `ckpt`."""
    for name in os.listdir(run_dir):
        if name.startswith(TMP_PREFIX) or name.endswith('.tmp'):
            os.remove(os.path.join(run_dir, name))
    keep_lines(os.path.join(run_dir, 'metrics.jsonl'), lambda line: json.loads(line)['epoch'] <= ckpt['epoch'] + 1)
    if 'ema_step' in ckpt:
        keep_lines(os.path.join(run_dir, 'lr.csv'), lambda line: int(line.split(',')[0]) <= ckpt['ema_step'])

    def stale(name, metric):
        path = os.path.join(run_dir, name)
        return not os.path.isfile(path) or load_checkpoint(path)['best_metric'] != metric
    save_best(run_dir, ckpt, stale(BEST, ckpt['best_metric']),
              'ema' in ckpt and ckpt['best_ema_metric'] >= 0 and stale(BEST_EMA, ckpt['best_ema_metric']))


def save_best(run_dir, state, raw, ema, save=save_checkpoint):
    """best_model.pth from the weights of a last.pth `state` when `raw`, best_model_ema.pth from its EMA if `ema`,
    written with `save` (a CheckpointWriter's, in the background, during training)."""
    if raw:
        save({k: v for k, v in state.items() if k != 'ema'}, os.path.join(run_dir, BEST))
    if ema:
        save(best_ema_state(state), os.path.join(run_dir, BEST_EMA))


def keep_lines(path, keep):
    """Rewrite the text file `path` without the lines that `keep` rejects or cannot read (a line cut short)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.readlines()

    def kept(line):
        try:
            return line.endswith('\n') and keep(line)
        except (ValueError, KeyError, IndexError, TypeError):
            return False
    rows = [line for line in lines if kept(line)]
    if len(rows) < len(lines):
        write_text(''.join(rows), path)


def fit(cfg, find_lr_only=False, on_epoch=None):
    """Train a model as configured; returns the run directory (config, classes, metrics, checkpoints). With
    --lr=auto the learning-rate range test picks cfg.lr first; `find_lr_only` (the lr_find command) stops after it.
    `on_epoch(epoch, row)` is called on the main process after each epoch with its metrics.jsonl row; it may raise
    (tune prunes a trial so) to end the run there, its files complete up to that epoch."""
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None:
        cfg = merge_given(resume['config'], cfg)
        check_compatible(resume, cfg.model, path=cfg.resume)  # the model this run would build
    if (cfg.lr == 'auto' or find_lr_only) and distributed.launched():  # its stop on divergence is per process
        raise config.UserError('lr_find runs in one process: run `python main.py lr_find` (or train --lr=auto) '
                               'without torchrun, then give torchrun the suggested --lr')
    # an explicit stem the model or the weights cannot take stops here; auto waits for the image size
    cfg.stem = models.resolve_stem(cfg.model, cfg.stem, cfg.image_size, cfg.pretrained_path, cfg.pretrained)
    ddp = distributed.setup(cfg)
    if resume is None:
        distributed.main_first(ddp, pretrained.prepare, cfg)  # finds (or fetches) the weights, records them
    cfg = distributed.main_first(ddp, loaders.resolve_roots, cfg)
    set_seed(cfg.seed)
    cfg.attention = models.resolve_attention(cfg.model, cfg.attention, cfg.pretrained_path, cfg.pretrained)
    cfg.normalize = transforms.normalize_name(cfg)
    train_set, val_set = loaders.build_train_val(cfg)
    if not cfg.max_epoch:
        cfg.max_epoch = config.auto_epochs(len(train_set))
        print(f'max_epoch: auto = {cfg.max_epoch} epochs for {len(train_set)} training images (at least '
              f'{config.AUTO_IMAGES} images seen, {config.AUTO_EPOCHS[0]}..{config.AUTO_EPOCHS[1]} epochs)')
    cfg.stem = models.resolve_stem(cfg.model, cfg.stem, cfg.image_size, cfg.pretrained_path, cfg.pretrained)
    classes = train_set.classes
    if resume is not None:
        check_compatible(resume, cfg.model, len(classes), cfg.resume, classes)
    device = distributed.device(ddp, select_device(cfg))
    # every check above passes before the first file of the run is written
    run_dir = distributed.broadcast(ddp, open_run_dir(cfg, resume, len(classes)) if ddp.is_main else None)
    # rank 0 computes and writes the statistics; the others then read them
    distributed.main_first(ddp, transforms.prepare_normalization, cfg, train_set, val_set, run_dir)
    print(f'data: {len(train_set)} training and {len(val_set)} validation images, {len(classes)} classes, '
          f'{cfg.image_size} px; run directory {run_dir}')

    model = models.build(cfg.model, len(classes), pretrained_path='' if resume else cfg.pretrained_path,
                         attention=cfg.attention, stem=cfg.stem, freeze_backbone=cfg.freeze_backbone,
                         pretrained='none' if resume else cfg.pretrained)
    if resume is not None:
        model.load_state_dict(resume['model'])  # before the optimizer: a gated attention's gates appear here
    model.to(device)
    net, precision = setup(model, cfg, device, wrap=lambda m: distributed.wrap(m, cfg, ddp, device))
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = distributed.shard_sampler(build_sampler(train_set.targets, cfg, generator), ddp, generator, cfg.seed)
    train_loader = loaders.train_loader(train_set, cfg, sampler, generator)
    val_loader = loaders.eval_loader(distributed.shard_dataset(val_set, ddp), cfg)
    criterion = build_criterion(cfg, train_set.targets, len(classes)).to(device)
    start_epoch, best_acc = (resume['epoch'] + 1, resume['best_metric']) if resume is not None else (0, -1.0)
    vis = RunDashboard(cfg, run_dir, classes, start_epoch, enabled=ddp.is_main)
    if cfg.lr == 'auto' or find_lr_only:  # the range test on this very run; its weights come back unchanged
        from utils.train import lr_find
        cfg.lr = lr_find.find(cfg, net, model, train_loader, criterion, device, precision, run_dir, vis)
    print('settings:\n' + '\n'.join(f'  {k} = {v!r}' for k, v in cfg.to_dict().items()))
    if ddp.is_main:
        write_json(cfg.to_dict(), os.path.join(run_dir, 'config.json'))
        write_json(classes, os.path.join(run_dir, 'classes.json'))
    if find_lr_only:
        return run_dir
    optimizer = build_optimizer(model, cfg)
    schedule = build_scheduler(optimizer, cfg, steps_per_epoch(len(train_loader), cfg))
    if resume is not None:
        optimizer.load_state_dict(resume['optimizer'])
        schedule.load_state_dict(resume['scheduler'])
        print(f'resuming {cfg.resume} at epoch {start_epoch + 1} (best validation accuracy {best_acc:.4f})')
    vis.start(train_set, val_set)
    trainer = Trainer(model, optimizer, schedule, cfg, None, run_dir if ddp.is_main else None, precision)
    if resume is not None:
        trainer.load_state_dict(resume)
    badlog = BadFileLog()
    writer = CheckpointWriter()  # an epoch's checkpoints are written while the next one trains

    for epoch in range(start_epoch, cfg.max_epoch):
        generator.manual_seed(cfg.seed + epoch)  # the same epoch draws the same order, resumed or not
        set_seed(cfg.seed + epoch)  # and the same augmentations, mixes and dropout masks
        trainer.begin_epoch(epoch)  # fine-tuning: freeze or unfreeze the backbone, switch the schedule
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
        ema_improved = trainer.update_best_ema(ema_val)
        row = {'epoch': epoch + 1, 'train_loss': train['loss'], 'train_acc': train['acc'], 'val_loss': val['loss'],
               'val_acc': val['acc'], 'lr': optimizer.param_groups[0]['lr'], 'seconds': round(train['seconds'], 2),
               'images_per_s': round(train['images'] / max(train['seconds'], 1e-9), 1)}
        if ema_val is not None:
            row.update(val_loss_ema=ema_val['loss'], val_acc_ema=ema_val['acc'])
        if not ddp.is_main:
            continue
        # The epoch's files in an order that a kill anywhere leaves repairable (repair_run): its log rows, then
        # last.pth -- the epoch counts from here -- then the best checkpoints, which can be rebuilt from last.pth.
        writer.wait()  # the previous epoch's files are on disk (a failed write stops the run here)
        append_line(os.path.join(run_dir, 'metrics.jsonl'), json.dumps(row))
        state = {'model': model.state_dict(), 'model_name': model.model_name, 'num_classes': len(classes),
                 'classes': list(classes), 'config': cfg.to_dict(), 'epoch': epoch, 'best_metric': best_acc,
                 'optimizer': optimizer.state_dict(), 'scheduler': schedule.state_dict(),
                 'version': VERSION, **trainer.state_dict()}
        if getattr(cfg, 'norm_stats', None):
            state['normalization'] = cfg.norm_stats
        state = to_host(state)  # a copy: the next epoch changes the weights while it is written
        writer.save(state, os.path.join(run_dir, LAST))
        save_best(run_dir, state, improved, ema_improved, writer.save)
        vis.epoch(row, val, val_set, badlog.seen)
        print(f'epoch {epoch + 1}/{cfg.max_epoch}: train loss {train["loss"]:.4f} acc {train["acc"]:.4f} | '
              f'val loss {val["loss"]:.4f} acc {val["acc"]:.4f}{" (best)" if improved else ""} | '
              + (f'EMA acc {ema_val["acc"]:.4f}{" (best)" if ema_improved else ""} | ' if ema_val else '') +
              f'{row["images_per_s"]:.0f} img/s, {train["seconds"]:.1f}s')
        try:
            if on_epoch is not None:
                on_epoch(epoch, row)
        except BaseException:
            writer.close()  # the epochs done reach the disk before the run stops
            raise
    writer.close()
    if badlog.summary():
        print(badlog.summary())
    print(f'best validation accuracy {best_acc:.4f}; checkpoints in {run_dir}')
    if trainer.report(best_acc, run_dir):
        print(trainer.report(best_acc, run_dir))
    distributed.teardown(ddp)
    if ddp.is_main and cfg.html_report:
        from utils.evaluate import run_report
        run_report.write(run_dir, vis=vis, device=device, bad=badlog.seen)
    return run_dir


