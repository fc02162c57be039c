"""What a training step does beyond forward / backward: class-weighted loss, CutMix / Mixup, gradient
accumulation and clipping, the per-step learning-rate log, an exponential moving average of the weights, and the
fine-tuning schedule (a frozen backbone for the first epochs, its batch-norm statistics frozen with it)."""
import math
import os

import torch

from utils import checkpoint
from utils.losses import build_loss, class_weights
from utils.mix import MixBatch, mixed_criterion  # noqa: F401  (train_one_epoch's loss)
from utils.optim import Phases


def build_criterion(cfg, targets, num_classes):
    """The loss named by cfg.loss, weighted per class by cfg.class_weight computed from the training labels."""
    counts = torch.bincount(torch.as_tensor(targets, dtype=torch.long), minlength=num_classes)
    return build_loss(cfg, class_weights(counts, getattr(cfg, 'class_weight', 'none'), getattr(cfg, 'cb_beta', 0.999)))


def train_mode(model):
    """model.train(), except the batch-norm layers whose parameters are all frozen: they keep their running
    statistics (eval mode), as the frozen layers of a pretrained backbone must."""
    model.train()
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and params and not any(p.requires_grad for p in params):
            m.eval()


def steps_per_epoch(batches, cfg):
    """Optimizer steps in an epoch of `batches` batches (the last partial accumulation steps too)."""
    return math.ceil(batches / getattr(cfg, 'accum_steps', 1))


class Trainer:
    """Mixes each batch, accumulates and clips gradients, steps optimizer and schedule, logs the learning rate
    every step (run_dir/lr.csv and the dashboard) and keeps the EMA of the weights when cfg.ema is on."""

    def __init__(self, model, optimizer, schedule, cfg, vis=None, run_dir=None, precision=None):
        self.model, self.optimizer, self.schedule, self.vis, self.run_dir = model, optimizer, schedule, vis, run_dir
        self.precision, self.cfg = precision, cfg
        self.accum = getattr(cfg, 'accum_steps', 1)
        self.clip = getattr(cfg, 'clip_grad', 0.0)
        # Draws from torch's global generator, which training seeds every epoch (so resume reproduces it).
        self.mix = MixBatch(getattr(cfg, 'cutmix_prob', 0.0), getattr(cfg, 'cutmix_alpha', 1.0),
                            getattr(cfg, 'mixup_prob', 0.0), getattr(cfg, 'mixup_alpha', 0.2))
        self.ema = None
        if getattr(cfg, 'ema', False):
            from timm.utils import ModelEmaV3
            # Warmup: the decay grows from 0 towards ema_decay, so a short run is not dominated by the random init.
            self.ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True)
        self.step_count, self.best_ema = 0, -1.0

    def begin_epoch(self, epoch):
        """Fine-tuning: only the final layer trains with freeze_backbone, or during the first freeze_epochs
        epochs; at the first epoch after those the backbone trains too and the schedule starts again."""
        if self.cfg.freeze_backbone or self.cfg.freeze_epochs:
            self.model.freeze_backbone(self.cfg.freeze_backbone or epoch < self.cfg.freeze_epochs)
        if isinstance(self.schedule, Phases):
            self.schedule.begin_epoch(epoch)

    def backward(self, loss, index, batches, epoch):
        """Backpropagate `loss` of batch `index`; every accum_steps batches (and at the last), take a step."""
        scaler = self.precision.scaler if self.precision is not None else None  # fp16 autocast on CUDA
        (scaler.scale(loss / self.accum) if scaler else loss / self.accum).backward()
        if (index + 1) % self.accum and index + 1 < batches:
            return
        if self.clip > 0:
            if scaler:
                scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        if scaler:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step_iter()
        self.step_count += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step_count)
        self.log_lr(epoch + (index + 1) / max(1, batches))

    def log_lr(self, x):
        lr = self.optimizer.param_groups[0]['lr']
        if self.vis is not None:
            self.vis.plot('lr (per step)', lr, x)
        if self.run_dir:
            with open(os.path.join(self.run_dir, 'lr.csv'), 'a') as f:
                f.write(f'{self.step_count},{x:.4f},{lr:.6g}\n')

    def evaluate_ema(self, evaluate, loader, criterion, device, badlog):
        """Validation metrics of the averaged weights (None without EMA)."""
        return None if self.ema is None else evaluate(self.ema.module, loader, criterion, device, badlog, 'val ema',
                                                      self.cfg)

    def state_dict(self):
        """What a checkpoint needs to resume the EMA exactly."""
        if self.ema is None:
            return {}
        return {'ema': self.ema.module.state_dict(), 'ema_step': self.step_count, 'best_ema_metric': self.best_ema}

    def load_state_dict(self, ckpt):
        """Restore the EMA (and the step counter it warms up with) from a checkpoint."""
        if self.ema is not None and 'ema' in ckpt:
            self.ema.module.load_state_dict(ckpt['ema'])
            self.best_ema = ckpt.get('best_ema_metric', -1.0)
        self.step_count = ckpt.get('ema_step', self.step_count)

    def save_best_ema(self, state, ema_val, run_dir):
        """Write best_model_ema.pth (the EMA weights as 'model') when the EMA's validation accuracy improves."""
        if ema_val is None or ema_val['acc'] <= self.best_ema:
            return False
        self.best_ema = ema_val['acc']
        best = {k: v for k, v in state.items() if k not in ('ema', 'optimizer', 'scheduler')}
        best.update(model=self.ema.module.state_dict(), best_metric=self.best_ema, ema_weights=True)
        checkpoint.save(best, os.path.join(run_dir, 'best_model_ema.pth'))
        return True

    def report(self, best_acc, run_dir):
        """One line naming the better of the raw and averaged weights ('' without EMA)."""
        if self.ema is None:
            return ''
        better = 'best_model_ema.pth (EMA)' if self.best_ema > best_acc else 'best_model.pth (raw weights)'
        return (f'best validation accuracy: raw weights {best_acc:.4f}, EMA {self.best_ema:.4f}; '
                f'the better one is {os.path.join(run_dir, better)}')
