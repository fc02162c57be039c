"""Optimizer and learning-rate scheduler registries."""
import torch


def param_groups(model, weight_decay):
    """No weight decay on biases and normalisation weights (1-d tensors), as in timm and torchvision."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def sgd(model, cfg):
    return torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)


def adam(model, cfg):
    return torch.optim.Adam(param_groups(model, cfg.weight_decay), lr=cfg.lr)


OPTIMIZERS = {'sgd': sgd, 'adam': adam}


def build_optimizer(model, cfg):
    name = cfg.optimizer.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f'unknown --optimizer={cfg.optimizer!r}; choose one of: {", ".join(OPTIMIZERS)}')
    return OPTIMIZERS[name](model, cfg)


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

    def load_state_dict(self, state):
        if self.scheduler and state:
            self.scheduler.load_state_dict(state)


def plateau(optimizer, cfg, steps_per_epoch):
    # The book's decay: multiply the learning rate by lr_decay when the validation loss stops improving.
    return Schedule(torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode='min', factor=cfg.lr_decay, patience=cfg.lr_patience), 'plateau')


def constant(optimizer, cfg, steps_per_epoch):
    return Schedule(None, 'none')


SCHEDULERS = {'plateau': plateau, 'none': constant}


def build_scheduler(optimizer, cfg, steps_per_epoch):
    name = cfg.scheduler.lower()
    if name not in SCHEDULERS:
        raise ValueError(f'unknown --scheduler={cfg.scheduler!r}; choose one of: {", ".join(SCHEDULERS)}')
    return SCHEDULERS[name](optimizer, cfg, steps_per_epoch)
