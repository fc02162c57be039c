"""The training and evaluation pipeline behind `train`, `val` and `testforacc`."""
import dataclasses
import functools
import itertools
import json
import os
import random
import time

import numpy as np
import torch

import config
import models
from data import loaders
from data.dataset import BadFileLog
from data.samplers import build_sampler
from utils.dashboard.windows import RunDashboard
from utils.evaluate import calibrate
from utils.evaluate.loop import evaluate
from utils.evaluate.metrics import calibration
from utils.io import (TMP_PREFIX, VERSION, append_line, load_checkpoint, progress, read_jsonl, save_checkpoint,
                      write_json, write_text)
from utils.train import distributed
from utils.train.checkpoint_writer import CheckpointWriter, to_host
from utils.train.interrupt import SkipFirst, StopRequest, random_states, set_random_states
from utils.train.optim import build_optimizer, build_scheduler
from utils.train.plan import describe, resolve, with_lr
from utils.train.precision import Precision, setup
from utils.train.step import (Running, Trainer, best_ema_state, best_weights, build_criterion, steps_per_epoch,
                              train_mode, train_step)

LAST, BEST, BEST_EMA = 'last.pth', 'best_model.pth', 'best_model_ema.pth'


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished training run, as main.train returns it: its folder, best validation accuracy and checkpoints
    ('' for one it does not have)."""
    dir: str
    best_val_acc: float
    best_model: str
    last: str
    best_model_ema: str

    @classmethod
    def of(cls, run_dir):
        rows = read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))
        path = {name: os.path.join(run_dir, name) if os.path.isfile(os.path.join(run_dir, name)) else ''
                for name in (BEST, LAST, BEST_EMA)}
        return cls(run_dir, max((r['val_acc'] for r in rows), default=float('nan')), path[BEST], path[LAST],
                   path[BEST_EMA])


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_one_epoch(model, loader, criterion, optimizer, schedule, device, epoch, cfg, vis, badlog, precision=None,
                    trainer=None, done=None, at_step=None):
    """One pass over the training data; returns mean loss, accuracy, image count and seconds. The loss and
    accuracy are read from the device every `print_freq` steps and at the end, nowhere else. `done` (a mid-epoch
    checkpoint's record): `loader` holds the rest of an interrupted epoch, which goes on from its batch count,
    running sums and seconds. `at_step(batches done, running, seconds)` is called after each optimizer step but the
    epoch's last; when it returns True the epoch stops there and None is returned."""
    precision = precision or Precision(None, device)
    train_mode(model)
    trainer = trainer or Trainer(model, optimizer, schedule, cfg, precision=precision)
    running, skip, before = Running(device), 0, 0.0
    if done is not None:
        skip, before = done['batch'], done['seconds']
        running.restore(done['running'])
    start, batches = time.time(), skip + len(loader)
    bar = progress(loader, f'epoch {epoch + 1}/{cfg.max_epoch}')
    for i, (images, labels, bad) in enumerate(bar, start=skip):
        badlog.add(bad)
        if images is None or len(labels) < 2:  # batch norm cannot train on a single image
            continue
        train_step(model, images, labels, criterion, trainer, running, cfg, vis, (i, batches, epoch))
        if i % cfg.print_freq == 0:
            loss, acc, last = running.read()
            bar.set_postfix(loss=f'{loss:.4f}', acc=f'{acc:.4f}')
            vis.step(epoch, i, batches, last, optimizer.param_groups[0]['lr'])
        if (at_step is not None and not trainer.pending and i + 1 < batches
                and at_step(i + 1, running, before + time.time() - start)):
            return None
    trainer.flush(epoch)
    loss, acc, _ = running.read()
    return {'loss': loss, 'acc': acc, 'images': running.seen, 'seconds': before + time.time() - start}


def interrupted(writer, vis, ddp, run_dir, stop, epoch, steps):
    """End the run on the signal `stop` recorded, once every file asked for is on disk: raise Interrupted with the
    resume command (`epoch`: the 0-based epoch it resumes in)."""
    writer.close()
    vis.close()
    distributed.teardown(ddp)
    last = os.path.join(run_dir, LAST)
    raise config.Interrupted(f'{stop.name()}: stopped in epoch {epoch + 1} after optimizer step {steps}; {last} '
                             f'holds the run. Continue it with: python main.py train --resume={last}', stop.status())


def early_stop(plan, epoch, best_epoch, best_acc):
    """Why the run stops after `epoch` (0-based) with --patience, its best `best_acc` at `best_epoch`; '' when it
    goes on (patience 0, an improvement in the last `patience` epochs, or the last epoch anyway)."""
    if not plan.patience or epoch - best_epoch < plan.patience or epoch + 1 >= plan.max_epoch:
        return ''
    return (f'no improvement of the validation accuracy for {plan.patience} epochs (--patience): best '
            f'{best_acc:.4f} at epoch {best_epoch + 1}')


def calibrate_best(run_dir, val_set, device, plan):
    """--calibrate=temperature: fit the temperature of best_model.pth (and best_model_ema.pth) on the validation split
    and store it in the checkpoint with what it changed (utils/evaluate/calibrate.py)."""
    for name in (BEST, BEST_EMA):
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            continue
        ckpt = load_checkpoint(path)
        model = models.build(ckpt['model_name'], ckpt['num_classes'], attention=plan.attention, stem=plan.stem)
        model.load_state_dict(ckpt['model'])
        found = evaluate(model.to(device), loaders.eval_loader(val_set, plan), torch.nn.CrossEntropyLoss(), device,
                         BadFileLog(), f'calibrate {name}', plan)
        t, record = calibrate.fit(found['probs'], found['targets'])
        save_checkpoint({**ckpt, 'temperature': t, 'calibration': record}, path)
        print(f'{name}: temperature {t:.3f} fitted on {record["images"]} validation images: ECE '
              f'{100 * record["ece_before"]:.2f}% -> {100 * record["ece_after"]:.2f}%, NLL {record["nll_before"]:.4f} '
              f'-> {record["nll_after"]:.4f}')


def auto_resume(cfg):
    """--resume=auto: the last.pth of the run --run-name when it has one ('' when not: the run starts)."""
    last = os.path.join(cfg.checkpoint_dir, cfg.run_name, LAST)
    print('resume auto: ' + (f'continuing {last}' if os.path.isfile(last) else f'no {last} yet: starting the run'))
    return last if os.path.isfile(last) else ''


def check_unfinished(resume, cfg):
    """UserError when the checkpoint `resume` ended its run early and this resume (`cfg`) does not change --patience:
    there is nothing left to train."""
    stopped = (resume.get('metrics') or {}).get('stopped')
    if stopped and 'patience' not in cfg.given:
        raise config.UserError(f'{cfg.resume} is a finished run: it stopped early at epoch {resume["epoch"] + 1} '
                               f'({stopped}); give another --patience (0 = off) to train it on')


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


def open_run_dir(plan, resume):
    """The run directory (its room checked by the plan): a new one, or for --resume the run's own, first made
    consistent with the last.pth it resumes from (repair_run)."""
    if resume is None:
        return make_run_dir(plan)
    run_dir = os.path.dirname(os.path.abspath(plan.resume))
    repair_run(run_dir, resume)
    return run_dir


def repair_run(run_dir, ckpt):
    """Make a run killed at any moment consistent with its last.pth `ckpt`: remove the temporary files of unfinished
    writes, drop the metrics.jsonl and lr.csv rows of the epoch it did not finish, and write the best checkpoints
    that `ckpt` counts (its best metric) but the kill left unwritten -- their weights are the ones in `ckpt`."""
    for name in os.listdir(run_dir):
        if name.startswith(TMP_PREFIX) or name.endswith('.tmp'):
            os.remove(os.path.join(run_dir, name))
    metrics = os.path.join(run_dir, 'metrics.jsonl')
    keep_lines(metrics, lambda line: json.loads(line)['epoch'] <= ckpt['epoch'] + 1)
    if 'metrics' in ckpt and last_row(metrics) < ckpt['epoch'] + 1:  # killed between last.pth and its row
        append_line(metrics, json.dumps(ckpt['metrics']))
    if 'ema_step' in ckpt:
        keep_lines(os.path.join(run_dir, 'lr.csv'), lambda line: int(line.split(',')[0]) <= ckpt['ema_step'])

    if 'mid_epoch' in ckpt:  # written after the finished epochs' files were on disk: nothing to rebuild
        return

    def stale(name, metric):
        path = os.path.join(run_dir, name)
        return not os.path.isfile(path) or load_checkpoint(path)['best_metric'] != metric
    save_best(run_dir, ckpt, stale(BEST, ckpt['best_metric']),
              'ema' in ckpt and ckpt['best_ema_metric'] >= 0 and stale(BEST_EMA, ckpt['best_ema_metric']))


def write_epoch(run_dir, state, improved, ema_improved):
    """The files of an epoch from its last.pth `state`, in an order that a kill anywhere leaves repairable
    (repair_run): last.pth -- the epoch counts from here --, its metrics.jsonl row, then the best checkpoints,
    which can be rebuilt from last.pth. Training writes them while the next epoch trains, so a kill before
    last.pth is on disk loses that epoch as well as the one in progress (docs/runs.md)."""
    save_checkpoint(state, os.path.join(run_dir, LAST))
    append_line(os.path.join(run_dir, 'metrics.jsonl'), json.dumps(state['metrics']))
    save_best(run_dir, state, improved, ema_improved)


def save_best(run_dir, state, raw, ema):
    """best_model.pth from the weights of a last.pth `state` when `raw`, best_model_ema.pth from its EMA if `ema`:
    the weights, the plan, classes and metrics, without what only resuming needs (best_weights)."""
    if raw:
        save_checkpoint(best_weights(state), os.path.join(run_dir, BEST))
    if ema:
        save_checkpoint(best_ema_state(state), os.path.join(run_dir, BEST_EMA))


def last_row(path):
    """The epoch of the last row of metrics.jsonl (0 when there is none)."""
    rows = read_jsonl(path)
    return rows[-1]['epoch'] if rows else 0


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
    """Train a model as the settings `cfg` ask (config.parse); returns the run directory (config, classes, metrics,
    checkpoints). Every decision is made first, once, into the run's Plan (utils/train/plan.py); with --lr=auto the
    learning-rate range test then picks the learning rate; `find_lr_only` (the lr_find command) stops after it.
    `on_epoch(epoch, row, plan)` is called on the main process after each epoch with its metrics.jsonl row; it may raise
    (tune prunes a trial so) to end the run there, its files complete up to that epoch."""
    if (cfg.lr == 'auto' or find_lr_only) and distributed.launched():  # its stop on divergence is per process
        raise config.UserError('lr_find runs in one process: run `python main.py lr_find` (or train --lr=auto) '
                               'without torchrun, then give torchrun the suggested --lr')
    if cfg.resume == 'auto':
        cfg = dataclasses.replace(cfg, resume=auto_resume(cfg))
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None:
        check_unfinished(resume, cfg)
    ddp = distributed.setup(cfg)
    plan, (train, val) = resolve(cfg, resume, ddp)
    # what the run was asked for: a resumed run's, with what its resume changes on top
    asked = {**config.asked_of(resume), **cfg.asked()} if resume is not None else cfg.asked()
    set_seed(plan.seed)
    device = torch.device(plan.device)
    # every check above passes before the first file of the run is written
    run_dir = distributed.broadcast(ddp, open_run_dir(plan, resume) if ddp.is_main else None)
    train_set, val_set = loaders.datasets(plan, train, val)
    classes = plan.classes
    print(f'data: {len(train_set)} training and {len(val_set)} validation images, {len(classes)} classes, '
          f'{plan.image_size} px; run directory {run_dir}')

    model = models.build(plan.model, len(classes), pretrained_path='' if resume else plan.pretrained_path,
                         attention=plan.attention, stem=plan.stem, freeze_backbone=plan.freeze_backbone,
                         pretrained='none' if resume else plan.pretrained)
    if resume is not None:
        model.load_state_dict(resume['model'])  # before the optimizer: a gated attention's gates appear here
    model.to(device)
    net, precision = setup(model, plan, device, wrap=lambda m: distributed.wrap(m, plan, ddp, device))
    generator = torch.Generator().manual_seed(plan.seed)
    sampler = distributed.shard_sampler(build_sampler(train_set.targets, plan, generator), ddp, generator, plan.seed)
    train_loader = loaders.train_loader(train_set, plan, sampler, generator)
    val_loader = loaders.eval_loader(distributed.shard_dataset(val_set, ddp), plan)
    criterion = build_criterion(plan, train_set.targets, len(classes)).to(device)
    start_epoch, best_acc = (resume['epoch'] + 1, resume['best_metric']) if resume is not None else (0, -1.0)
    best_epoch = resume.get('best_epoch', resume['epoch']) if resume is not None else -1
    vis = RunDashboard(plan, run_dir, classes, start_epoch, enabled=ddp.is_main)
    if plan.lr == 'auto' or find_lr_only:  # the range test on this very run; its weights come back unchanged
        from utils.train import lr_find
        plan = with_lr(plan, *lr_find.find(plan, net, model, train_loader, criterion, device, precision, run_dir,
                                           vis))
    print(describe(plan, cfg))
    if ddp.is_main:
        write_json({'asked': asked, 'used': plan.to_dict()}, os.path.join(run_dir, 'config.json'))
        write_json(list(classes), os.path.join(run_dir, 'classes.json'))
    if find_lr_only:
        return run_dir
    optimizer = build_optimizer(model, plan)
    schedule = build_scheduler(optimizer, plan, steps_per_epoch(len(train_loader), plan))
    if resume is not None:
        optimizer.load_state_dict(resume['optimizer'])
        schedule.load_state_dict(resume['scheduler'])
        within = f', after batch {resume["mid_epoch"]["batch"]}' if 'mid_epoch' in resume else ''
        print(f'resuming {cfg.resume} at epoch {start_epoch + 1}{within} (best validation accuracy {best_acc:.4f})')
    vis.start(train_set, val_set, plan)
    trainer = Trainer(model, optimizer, schedule, plan, None, run_dir if ddp.is_main else None, precision)
    if resume is not None:
        trainer.load_state_dict(resume)
    badlog = BadFileLog()
    writer = CheckpointWriter()  # an epoch's checkpoints are written while the next one trains
    record = {'plan': plan.to_dict(), 'asked': asked, 'model_name': model.model_name,
              'num_classes': len(classes), 'classes': list(classes), 'version': VERSION}

    mid = resume.get('mid_epoch') if resume is not None else None  # stopped within an epoch: its rest first
    last_row = resume.get('metrics') if resume is not None else None

    def state_now(epoch, **extra):
        """last.pth's state after `epoch` (0-based; -1: none yet) finished, with `extra` on top."""
        state = {'model': model.state_dict(), **record, 'epoch': epoch, 'best_metric': best_acc,
                 'best_epoch': best_epoch, 'optimizer': optimizer.state_dict(), 'scheduler': schedule.state_dict(),
                 **trainer.state_dict(), **extra}
        return to_host(state)  # a copy: training goes on changing the weights while it is written

    def at_step(epoch, batch, running, seconds):
        """After an optimizer step within `epoch`: write last.pth there on a signal (and stop) or every
        --checkpoint-every steps."""
        stopping = distributed.any_rank(ddp, stop.requested)
        if not stopping and not (plan.checkpoint_every and trainer.step_count % plan.checkpoint_every == 0):
            return False
        if ddp.is_main:
            mid_state = {'epoch': epoch, 'batch': batch, 'running': running.state(), 'seconds': seconds,
                         'random': random_states()}
            writer.wait()  # the finished epochs' files first: a mid-epoch last.pth never rebuilds them
            writer.save(state_now(epoch - 1, mid_epoch=mid_state,
                                  **({'metrics': last_row} if last_row is not None else {})),
                        os.path.join(run_dir, LAST))
        return stopping

    with StopRequest() as stop:
        for epoch in range(start_epoch, plan.max_epoch):
            generator.manual_seed(plan.seed + epoch)  # the same epoch draws the same order, resumed or not
            set_seed(plan.seed + epoch)  # and the same augmentations, mixes and dropout masks
            trainer.begin_epoch(epoch)  # fine-tuning: freeze or unfreeze the backbone, switch the schedule
            loader = train_loader
            if mid is not None:  # the rest of the epoch, with the random states of the moment it stopped
                rest = SkipFirst(sampler, mid['batch'] * plan.batch_size,
                                 functools.partial(set_random_states, mid['random']))
                loader = loaders.train_loader(train_set, plan, rest, generator)
            train = train_one_epoch(net, loader, criterion, optimizer, schedule, device, epoch, plan, vis, badlog,
                                    precision, trainer, mid, functools.partial(at_step, epoch))
            mid = None
            if train is None:
                interrupted(writer, vis, ddp, run_dir, stop, epoch, trainer.step_count)
            distributed.sync_buffers(model, ddp)
            train = distributed.reduce_metrics(ddp, train)
            val = distributed.reduce_metrics(ddp, evaluate(model, val_loader, criterion, device, badlog, cfg=plan))
            ema_val = trainer.evaluate_ema(evaluate, val_loader, criterion, device, badlog)
            ema_val = ema_val and distributed.reduce_metrics(ddp, ema_val)
            schedule.step_epoch(val['loss'])
            improved = val['acc'] > best_acc
            best_acc = max(best_acc, val['acc'])
            ema_improved = trainer.update_best_ema(ema_val)
            best_epoch = epoch if improved or ema_improved else best_epoch
            stop_early = early_stop(plan, epoch, best_epoch, best_acc)
            row = {'epoch': epoch + 1, 'train_loss': train['loss'], 'train_acc': train['acc'],
                   'val_loss': val['loss'], 'val_acc': val['acc'], 'lr': optimizer.param_groups[0]['lr'],
                   'seconds': round(train['seconds'], 2),
                   'images_per_s': round(train['images'] / max(train['seconds'], 1e-9), 1)}
            if len(val['targets']):
                cal = calibration(val['probs'], val['targets'])
                row.update(val_nll=round(cal['nll'], 6), val_ece=round(cal['ece'], 6))
            if ema_val is not None:
                row.update(val_loss_ema=ema_val['loss'], val_acc_ema=ema_val['acc'])
            if stop_early:
                row['stopped'] = stop_early
            last_row = row
            if ddp.is_main:
                writer.wait()  # the previous epoch's files are on disk (a failed write stops the run here)
                writer.submit(write_epoch, run_dir, state_now(epoch, metrics=row), improved, ema_improved)
                vis.epoch(row, val, val_set, badlog.seen)
                print(f'epoch {epoch + 1}/{plan.max_epoch}: train loss {train["loss"]:.4f} acc '
                      f'{train["acc"]:.4f} | val loss {val["loss"]:.4f} acc {val["acc"]:.4f}'
                      f'{" (best)" if improved else ""} | '
                      + (f'EMA acc {ema_val["acc"]:.4f}{" (best)" if ema_improved else ""} | ' if ema_val else '')
                      + f'{row["images_per_s"]:.0f} img/s, {train["seconds"]:.1f}s')
                try:
                    if on_epoch is not None:
                        on_epoch(epoch, row, plan)
                except BaseException:
                    writer.close()  # the epochs done reach the disk before the run stops
                    raise
            if stop_early:
                if ddp.is_main:
                    print(f'stopped early after epoch {epoch + 1} of {plan.max_epoch}: {stop_early}')
                    vis.stopped(epoch + 1, stop_early)
                break
            if epoch + 1 < plan.max_epoch and distributed.any_rank(ddp, stop.requested):  # last.pth is whole
                interrupted(writer, vis, ddp, run_dir, stop, epoch + 1, trainer.step_count)
    writer.close()
    vis.close()
    if ddp.is_main and plan.calibrate == 'temperature':
        calibrate_best(run_dir, val_set, device, plan)
    if badlog.summary():
        print(badlog.summary())
    print(f'best validation accuracy {best_acc:.4f}; checkpoints in {run_dir}')
    if trainer.report(best_acc, run_dir):
        print(trainer.report(best_acc, run_dir))
    distributed.teardown(ddp)
    if ddp.is_main and plan.html_report:
        from utils.evaluate import run_report
        run_report.write(run_dir, vis=vis, device=device, bad=badlog.seen)
    return run_dir
