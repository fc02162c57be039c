"""Batch-level CutMix (Yun et al. 2019), Mixup (Zhang et al. 2018) and the per-class horizontal flip.

Each returns ``(mixed_x, y_a, y_b, lam)``; train with ``mixed_criterion`` so any loss
(label smoothing included) is applied to hard labels and only mixed once.
Partners come from a random permutation, so any batch size works, odd ones too.
"""
import math
import random

import torch


def _beta(alpha, generator):
    """One Beta(alpha, alpha) draw, seeded from torch's RNG so torch seeding reproduces it."""
    if not alpha > 0:
        raise ValueError(f"mix alpha must be > 0, got {alpha}")
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator).item())
    return random.Random(seed).betavariate(alpha, alpha)


def _partners(y, generator):
    """A random permutation of the batch, on the labels' device (copied without waiting for the device)."""
    return torch.randperm(y.shape[0], generator=generator).to(y.device, non_blocking=True)


def cutmix(x, y, alpha=1.0, generator=None):
    """Paste a random box from a shuffled batch into ``x`` (N, C, H, W).

    The box has area ``(1 - lam) * H * W`` around a uniform centre and is clipped to the image;
    lam is then recomputed from the clipped box so it is the exact fraction of original pixels.
    """
    lam = _beta(alpha, generator)
    index = _partners(y, generator)
    height, width = x.shape[-2:]
    cut = math.sqrt(1 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=generator).item())
    cx = int(torch.randint(0, width, (1,), generator=generator).item())
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[..., top:bottom, left:right][index]
    lam = 1 - (bottom - top) * (right - left) / (height * width)
    return mixed, y, y[index], lam


def mixup(x, y, alpha=0.2, generator=None):
    """Blend ``x`` with a shuffled copy of itself: ``lam * x + (1 - lam) * x[perm]``."""
    lam = _beta(alpha, generator)
    index = _partners(y, generator)
    return lam * x + (1 - lam) * x[index], y, y[index], lam


class MixBatch:
    """Apply CutMix with ``cutmix_prob``, else Mixup with ``mixup_prob``, else nothing, per batch.

    Calling it on ``(x, y)`` returns ``(x, y_a, y_b, lam)``; with nothing applied it returns
    the input itself with ``y_b = y_a`` and ``lam = 1``.
    """

    def __init__(self, cutmix_prob=0.0, cutmix_alpha=1.0, mixup_prob=0.0, mixup_alpha=0.2, generator=None):
        for name, prob in (('cutmix_prob', cutmix_prob), ('mixup_prob', mixup_prob)):
            if not 0 <= prob <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {prob}")
        if cutmix_prob + mixup_prob > 1:
            raise ValueError(f"cutmix_prob + mixup_prob must be <= 1 (one mix per batch), "
                             f"got {cutmix_prob} + {mixup_prob}")
        for name, alpha in (('cutmix_alpha', cutmix_alpha), ('mixup_alpha', mixup_alpha)):
            if not alpha > 0:
                raise ValueError(f"{name} must be > 0, got {alpha}")
        self.cutmix_prob, self.cutmix_alpha = cutmix_prob, cutmix_alpha
        self.mixup_prob, self.mixup_alpha = mixup_prob, mixup_alpha
        self.generator = generator

    def __call__(self, x, y):
        if self.cutmix_prob == 0 and self.mixup_prob == 0:
            return x, y, y, 1.0
        u = torch.rand((), generator=self.generator).item()
        if u < self.cutmix_prob:
            return cutmix(x, y, self.cutmix_alpha, self.generator)
        if u < self.cutmix_prob + self.mixup_prob:
            return mixup(x, y, self.mixup_alpha, self.generator)
        return x, y, y, 1.0


def flip_by_class(x, y, flips):
    """Horizontal flips of a batch ``x`` (N, C, H, W) with labels ``y``, drawn per image with probability 1/2 among
    the images whose class ``flips`` (a long tensor, per class: the class a flipped image becomes, or -1) allows;
    a flipped image takes that class as its label (its mirror partner's, for a mirror pair). Flipping the
    finished batch draws the same images as flipping each before its other augmentations would: each of those
    is as likely mirrored (a crop's offset, an erased box, a RandAugment shear).
    Returns ``(x, y)``; mix after it, so that a mixed image blends the labels the flip gave."""
    becomes = flips.to(y.device, non_blocking=True)[y]
    flip = (becomes >= 0) & (torch.rand(y.shape[0], device=y.device) < 0.5)
    return torch.where(flip[:, None, None, None], x.flip(3), x), torch.where(flip, becomes, y)


def mixed_criterion(criterion, output, y_a, y_b, lam):
    """``lam * criterion(output, y_a) + (1 - lam) * criterion(output, y_b)``."""
    return lam * criterion(output, y_a) + (1 - lam) * criterion(output, y_b)
