"""Test-time augmentation: ttach transforms, merged as probabilities."""
import torch
import torch.nn as nn
import ttach as tta

import config

TTA_NAMES, MERGES = config.TTA, config.choices()["tta_merge"]


def build_tta(name, image_size):
    """Return the ttach.Compose for a TTA name, or None for 'none'.

    five_crop/ten_crop cut 0.875 * image_size crops and resize them back to image_size, so any
    model that accepts image_size accepts them. multiscale feeds 0.875x, 1x and 1.125x images and
    needs a model with adaptive pooling. hflip follows the run's flip policy (TTAModel's `flips`);
    the flips of vflip, d4 and ten_crop average every class alike: not for direction-bearing classes.
    """
    crop = round(0.875 * image_size)
    back = tta.Resize([(image_size, image_size)], interpolation="bilinear")
    builders = {
        "none": lambda: None,
        "hflip": lambda: tta.Compose([tta.HorizontalFlip()]),
        "vflip": lambda: tta.Compose([tta.VerticalFlip()]),
        "d4": lambda: tta.Compose([tta.HorizontalFlip(), tta.Rotate90(angles=[0, 90, 180, 270])]),
        "five_crop": lambda: tta.Compose([tta.FiveCrops(crop, crop), back]),
        "ten_crop": lambda: tta.Compose([tta.HorizontalFlip(), tta.FiveCrops(crop, crop), back]),
        "multiscale": lambda: tta.Compose([tta.Scale([0.875, 1, 1.125], interpolation="bilinear")]),
    }
    return builders[config.check_choice("tta", name, TTA_NAMES)]()


class TTAModel(nn.Module):
    """Wrap a classifier so that forward(x) returns MERGED PROBABILITIES, (batch, n_classes).

    Each augmented view's logits go through softmax first, then the views are merged: 'mean',
    'gmean' (geometric mean), 'max', or 'tsharpen' (mean of sqrt(p)). Merging probabilities, not
    logits, matters: ttach's gmean/tsharpen give NaN on negative logits. Every merge is
    renormalised so rows sum to 1. transforms=None means no augmentation (softmax of the model).
    """

    def __init__(self, model, transforms=None, merge="mean", flips=()):
        super().__init__()
        merge = config.check_choice("tta_merge", merge, MERGES)
        self.model, self.transforms, self.merge = model, transforms, merge
        self.register_buffer("flips", torch.tensor(flips, dtype=torch.long), persistent=False)

    def views(self, x):
        """The probabilities of every view of x, (views, batch, classes). With a flip policy (`flips`: per class
        the class a mirrored image becomes, or -1) the views are x and its mirror, and the mirror's probability
        of class c is read where the policy sends c -- c itself for a flip-safe class, its partner for a mirror
        pair (keep-left's probability is the mirror's keep-right one) --, or, for a class a flip changes into no
        class, not averaged: x's own probability stands in."""
        if len(self.flips):
            p, q = self.model(x).softmax(dim=1), self.model(x.flip(3)).softmax(dim=1)
            return torch.stack([p, torch.where(self.flips >= 0, q[:, self.flips.clamp_min(0)], p)])
        return torch.stack([self.model(t.augment_image(x)).softmax(dim=1) for t in self.transforms])

    def forward(self, x):
        if self.transforms is None and not len(self.flips):
            return self.model(x).softmax(dim=1)
        probs = self.views(x)
        if self.merge == "mean":
            merged = probs.mean(0)
        elif self.merge == "gmean":
            # in log space: a product of many small probabilities underflows to 0
            merged = probs.clamp_min(1e-30).log().mean(0).exp()
        elif self.merge == "max":
            merged = probs.amax(0)
        else:
            merged = probs.sqrt().mean(0)
        return merged / merged.sum(dim=1, keepdim=True)
