"""What a training step does beyond forward / backward: class-weighted loss, CutMix / Mixup, gradient
accumulation and clipping, the per-step learning-rate log, an exponential moving average of the weights, and the
fine-tuning schedule (a frozen backbone for the first epochs, its batch-norm statistics frozen with it)."""
import math
import os

import torch

from utils.io import append_line
from utils.train.losses import build_loss, class_weights
from data.cache import finish_batch
from data.mix import MixBatch, flip_by_class, mixed_criterion
from utils.train.optim import Phases
from utils.train.precision import Precision


def build_criterion(cfg, targets, num_classes):
    """The loss named by cfg.loss, weighted per class by cfg.class_weight computed from the training labels."""
    counts = torch.bincount(torch.as_tensor(targets, dtype=torch.long), minlength=num_classes)
    return build_loss(cfg, class_weights(counts, cfg.class_weight, cfg.cb_beta))


RESUME_ONLY = ('ema', 'optimizer', 'scheduler')  # what a last.pth holds for resuming, and a best checkpoint not


def best_weights(state):
    """What best_model.pth holds: a last.pth `state` without what only resuming needs (RESUME_ONLY): the weights,
    the plan, classes and metrics."""
    return {k: v for k, v in state.items() if k not in RESUME_ONLY}


def best_ema_state(state):
    """What best_model_ema.pth holds: the EMA weights of a last.pth `state` as 'model', with their best metric."""
    return {**best_weights(state), 'model': state['ema'], 'best_metric': state['best_ema_metric'],
            'ema_weights': True}


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
    return math.ceil(batches / cfg.accum_steps)


class Trainer:
    """Mixes each batch, accumulates and clips gradients, steps optimizer and schedule, logs the learning rate
    every step (run_dir/lr.csv and the dashboard) and keeps the EMA of the weights when cfg.ema is on."""

    def __init__(self, model, optimizer, schedule, cfg, vis=None, run_dir=None, precision=None):
        self.model, self.optimizer, self.schedule, self.vis, self.run_dir = model, optimizer, schedule, vis, run_dir
        self.precision, self.cfg = precision or Precision(None, torch.device('cpu')), cfg  # None: fp32
        self.scaler = precision.scaler if precision is not None else None  # fp16 autocast on CUDA
        self.accum = cfg.accum_steps
        self.clip = cfg.clip_grad
        # Draws from torch's global generator, which training seeds every epoch (so resume reproduces it).
        self.mix = MixBatch(cfg.cutmix_prob, cfg.cutmix_alpha, cfg.mixup_prob, cfg.mixup_alpha)
        # the per-class flip policy (--hflip as the plan decided it); None when no class is ever flipped
        self.flips = torch.tensor(cfg.flips, dtype=torch.long) if any(a >= 0 for a in cfg.flips) else None
        self.ema = None
        if cfg.ema:
            from timm.utils import ModelEmaV3
            # Warmup: the decay grows from 0 towards ema_decay, so a short run is not dominated by the random init.
            self.ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True)
        self.step_count, self.best_ema = 0, -1.0
        self.pending = 0  # batches backpropagated since the last step

    def begin_epoch(self, epoch):
        """Fine-tuning: only the final layer trains with freeze_backbone, or during the first freeze_epochs
        epochs; at the first epoch after those the backbone trains too and the schedule starts again."""
        if self.cfg.freeze_backbone or self.cfg.freeze_epochs:
            self.model.freeze_backbone(self.cfg.freeze_backbone or epoch < self.cfg.freeze_epochs)
        if isinstance(self.schedule, Phases):
            self.schedule.begin_epoch(epoch)

    def backward(self, loss, index, batches, epoch):
        """Backpropagate `loss` of batch `index` of `batches`; every accum_steps batches, and at the last one, step
        with the mean gradient of the batches accumulated since the previous step."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        self.pending += 1
        if self.pending == self.accum or index + 1 == batches:
            self.step(epoch + (index + 1) / max(1, batches))

    def flush(self, epoch):
        """At the end of epoch `epoch`: step on gradients still accumulated (its last batches were skipped), so that
        none carry into the next epoch."""
        if self.pending:
            self.step(epoch + 1)

    def step(self, x):
        """One optimizer step on the mean of the `pending` accumulated gradients; x = fractional epoch (the log)."""
        if self.pending > 1:  # a group cut short by the epoch's end divides by its own size, not accum_steps
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.div_(self.pending)
        self.pending = 0
        if self.clip > 0:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step_iter()
        self.step_count += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step_count)
        self.log_lr(x)

    def log_lr(self, x):
        lr = self.optimizer.param_groups[0]['lr']
        if self.vis is not None:
            self.vis.plot('lr (per step)', lr, x)
        if self.run_dir:
            append_line(os.path.join(self.run_dir, 'lr.csv'), f'{self.step_count},{x:.4f},{lr:.6g}')

    def evaluate_ema(self, evaluate, loader, criterion, device, badlog):
        """Validation metrics of the averaged weights (None without EMA)."""
        return None if self.ema is None else evaluate(self.ema.module, loader, criterion, device, badlog, 'val ema',
                                                      self.cfg)

    def state_dict(self):
        """What a checkpoint needs to resume the step count (lr.csv, EMA warmup) and the EMA exactly."""
        if self.ema is None:
            return {'ema_step': self.step_count}
        return {'ema': self.ema.module.state_dict(), 'ema_step': self.step_count, 'best_ema_metric': self.best_ema}

    def load_state_dict(self, ckpt):
        """Restore the EMA (and the step counter it warms up with) from a checkpoint."""
        if self.ema is not None and 'ema' in ckpt:
            self.ema.module.load_state_dict(ckpt['ema'])
            self.best_ema = ckpt.get('best_ema_metric', -1.0)
        self.step_count = ckpt.get('ema_step', self.step_count)

    def update_best_ema(self, ema_val):
        """True (and the new best recorded, for the checkpoint) when the EMA's validation accuracy improves."""
        if ema_val is None or ema_val['acc'] <= self.best_ema:
            return False
        self.best_ema = ema_val['acc']
        return True

    def report(self, best_acc, run_dir):
        """One line naming the better of the raw and averaged weights ('' without EMA)."""
        if self.ema is None:
            return ''
        better = 'best_model_ema.pth (EMA)' if self.best_ema > best_acc else 'best_model.pth (raw weights)'
        return (f'best validation accuracy: raw weights {best_acc:.4f}, EMA {self.best_ema:.4f}; '
                f'the better one is {os.path.join(run_dir, better)}')


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

    def state(self):
        """The sums and the image count, as plain values (a mid-epoch checkpoint's)."""
        return {'sums': self.sums.tolist(), 'seen': self.seen}

    def restore(self, state):
        self.sums = torch.tensor(state['sums'], dtype=torch.float64, device=self.sums.device)
        self.seen = state['seen']

    def read(self):
        """(mean loss, accuracy, last step's loss) of the images so far."""
        total, correct, last = self.sums.tolist()
        return total / max(self.seen, 1), correct / max(self.seen, 1), last


def train_step(model, images, labels, criterion, trainer, running, cfg, vis, step):
    """One training step, which never waits for the device: the batch finished on the device, flipped per class,
    mixed, forward, loss, backward and optimizer step (`trainer`), loss and correct predictions added to `running`.
    `step` = (batch index, batches in the epoch, epoch)."""
    images = finish_batch(images, running.sums.device, cfg, True)
    labels = labels.to(running.sums.device, non_blocking=True)
    if trainer.flips is not None:
        images, labels = flip_by_class(images, labels, trainer.flips)
    images, y_a, y_b, lam = trainer.mix(images, labels)
    vis.show_batch(images, labels)  # the first batch of the run only
    with trainer.precision.autocast():
        output = model(images)
        loss = mixed_criterion(criterion, output, y_a, y_b, lam)
    trainer.backward(loss, *step)
    running.add(loss, output, labels)
