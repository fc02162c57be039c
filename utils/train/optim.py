"""Optimizer and learning-rate scheduler registries."""
import math

import torch

from config import UserError


def param_groups(model, cfg):
    """No weight decay on biases and normalisation weights (1-d tensors), as in timm and torchvision; with
    cfg.backbone_lr_mult other than 1 (discriminative learning rates), the final layer's parameters come first
    at cfg.lr and the backbone's follow at cfg.lr * backbone_lr_mult (`lr_scale` keeps the factor)."""
    head = {id(p) for p in model.head.parameters()} if cfg.backbone_lr_mult != 1 else None
    groups = {}
    for p in model.parameters():
        if p.requires_grad:
            scale = 1.0 if head is None or id(p) in head else cfg.backbone_lr_mult
            groups.setdefault((scale != 1.0, p.ndim <= 1), []).append((p, scale))
    return [{'params': [p for p, _ in members], 'weight_decay': 0.0 if no_decay else cfg.weight_decay,
             'lr': cfg.lr * members[0][1], 'lr_scale': members[0][1]}
            for (_, no_decay), members in sorted(groups.items())]


def sgd(model, cfg):
    nesterov = cfg.nesterov
    if nesterov and cfg.momentum <= 0:
        raise UserError('--nesterov needs --momentum above 0')
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)


def adam(model, cfg):
    return torch.optim.Adam(param_groups(model, cfg), lr=cfg.lr)


def adamw(model, cfg):
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)


def radam(model, cfg):
    return torch.optim.RAdam(param_groups(model, cfg), lr=cfg.lr)


def ranger(model, cfg):
    from third_party.ranger import Ranger
    return Ranger(param_groups(model, cfg), lr=cfg.lr, k=cfg.ranger_k, alpha=cfg.ranger_alpha)


def ranger_adabelief(model, cfg):
    from ranger_adabelief import RangerAdaBelief
    return RangerAdaBelief(param_groups(model, cfg), lr=cfg.lr, k=cfg.ranger_k, alpha=cfg.ranger_alpha)


def timm_optimizer(model, cfg, name):
    """Any optimizer timm knows by name (e.g. lamb, lion, adabelief, madgrad), on the same parameter groups."""
    import timm.optim
    return timm.optim.create_optimizer_v2(param_groups(model, cfg), opt=name, lr=cfg.lr,
                                          momentum=cfg.momentum)


OPTIMIZERS = {'sgd': sgd, 'adam': adam, 'adamw': adamw, 'radam': radam, 'ranger': ranger,
              'ranger_adabelief': ranger_adabelief}


def build_optimizer(model, cfg):
    if cfg.optimizer.startswith('timm/'):
        return timm_optimizer(model, cfg, cfg.optimizer[len('timm/'):])
    return OPTIMIZERS[cfg.optimizer](model, cfg)


class Schedule:
    """A scheduler and when it steps: 'iter' (every batch), 'epoch', or 'plateau' (each epoch, on val loss)."""

    def __init__(self, scheduler, every):
        self.scheduler, self.every = scheduler, every

    def step_iter(self):
        if self.every == 'iter':
            self.scheduler.step()

    def step_epoch(self, val_loss):
        if self.every == 'epoch':
            self.scheduler.step()
        elif self.every == 'plateau':
            self.scheduler.step(val_loss)

    def state_dict(self):
        return self.scheduler.state_dict() if self.scheduler else {}

    # What the run's length decides: a resumed run keeps the values built from its (possibly new) max_epoch, so
    # `--resume=... --max-epoch=30` stretches onecycle / multistep over the longer run instead of failing.
    LENGTH_KEYS = ('total_steps', '_schedule_phases', 'milestones')

    def load_state_dict(self, state):
        if self.scheduler and state:
            self.scheduler.load_state_dict({k: v for k, v in state.items() if k not in self.LENGTH_KEYS})


def plateau(optimizer, cfg, steps_per_epoch, epochs):
    # The book's decay: multiply the learning rate by lr_decay when the validation loss stops improving.
    return Schedule(torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode='min', factor=cfg.lr_decay, patience=cfg.lr_patience), 'plateau')


def constant(optimizer, cfg, steps_per_epoch, epochs):
    return Schedule(None, 'none')


def step(optimizer, cfg, steps_per_epoch, epochs):
    return Schedule(torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_decay), 'epoch')


def multistep(optimizer, cfg, steps_per_epoch, epochs):
    milestones = [int(m) for m in cfg.lr_milestones] or [epochs // 2, epochs * 3 // 4]
    return Schedule(torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.lr_decay), 'epoch')


def warmup_cosine_factor(step, warmup, total, floor):
    """Learning-rate factor at optimizer step `step`: linear from 0.01 to 1 over `warmup` steps, then a cosine
    from 1 down to `floor` at step `total`."""
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine(optimizer, cfg, steps_per_epoch, epochs):
    total, warmup = epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)
    floor = cfg.min_lr / cfg.lr
    return Schedule(torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine_factor(s, warmup, total, floor)), 'iter')


def onecycle(optimizer, cfg, steps_per_epoch, epochs):
    total = epochs * steps_per_epoch
    pct = cfg.warmup_epochs / epochs if cfg.warmup_epochs > 0 else 0.3
    defaults = optimizer.defaults
    cycle = 'betas' in defaults or defaults.get('momentum', 0) > 0
    # +1: the scheduler refuses a step beyond total_steps, and the last batch of the run takes one.
    max_lr = [cfg.lr * g.get('lr_scale', 1.0) for g in optimizer.param_groups]
    return Schedule(torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total + 1,
                                                        pct_start=min(0.5, pct), cycle_momentum=cycle), 'iter')


SCHEDULERS = {'plateau': plateau, 'none': constant, 'step': step, 'multistep': multistep, 'cosine': cosine,
              'onecycle': onecycle}


def build_scheduler(optimizer, cfg, steps_per_epoch, epochs=None):
    """The schedule cfg.scheduler names, over `epochs` epochs (default: the run, max_epoch) of `steps_per_epoch`
    optimizer steps; with cfg.freeze_epochs, one for the frozen epochs and a fresh one after them (Phases)."""
    name = cfg.scheduler.lower()
    if epochs is None and cfg.freeze_epochs:
        return Phases(optimizer, cfg, steps_per_epoch)
    epochs = epochs or cfg.max_epoch
    if not epochs:  # --max-epoch=0 (auto) is resolved by engine.fit from the training set before this
        raise ValueError('build_scheduler needs the epochs: max_epoch is still 0 (auto)')
    return SCHEDULERS[name](optimizer, cfg, steps_per_epoch, epochs)


class Phases(Schedule):
    """Fine-tuning (--freeze-epochs=N): the schedule runs over the N head-only epochs, then starts again --
    warmup included, from the base learning rates -- over the remaining max_epoch - N (fastai's fine_tune).
    Its state records the phase, so a run resumed on either side of the switch continues exactly."""

    def __init__(self, optimizer, cfg, steps_per_epoch):
        self.optimizer, self.cfg, self.steps, self.phase = optimizer, cfg, steps_per_epoch, None
        self.enter(0)

    def enter(self, phase):
        """Start phase 0 (head only) or 1 (everything) with a fresh schedule from the base learning rates."""
        if phase == self.phase:
            return
        for group in self.optimizer.param_groups:
            group['lr'] = self.cfg.lr * group.get('lr_scale', 1.0)
            group.pop('initial_lr', None)  # the schedulers take their base from it
        epochs = self.cfg.freeze_epochs if phase == 0 else self.cfg.max_epoch - self.cfg.freeze_epochs
        current = build_scheduler(self.optimizer, self.cfg, self.steps, max(1, epochs))
        self.scheduler, self.every, self.phase = current.scheduler, current.every, phase

    def begin_epoch(self, epoch):
        """Switch to the second schedule at the first epoch that trains the backbone."""
        self.enter(int(epoch >= self.cfg.freeze_epochs))

    def state_dict(self):
        return {**super().state_dict(), 'phase': self.phase}

    def load_state_dict(self, state):
        lrs = [g['lr'] for g in self.optimizer.param_groups]  # as the resumed optimizer state left them
        self.enter(state.get('phase', 0))
        super().load_state_dict({k: v for k, v in state.items() if k != 'phase'})
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group['lr'] = lr
