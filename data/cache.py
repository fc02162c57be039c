"""The in-memory cache (`--cache=ram`): every image decoded and resized to the working size once, kept as
uint8, and augmented per batch on the training device (utils/fast.py: finish_batch): the `basic` preset,
`hflip`, `jitter`, the normalisation (ImageNet's or the training set's own) and `erasing`, in the order the
per-image transforms apply them.

The memory it takes is estimated and printed before anything is decoded; a cache that would not fit in the
available memory is refused with the figures. Cached eval tensors equal the uncached ones bit for bit.
"""
import os

import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T

from config import UserError
from .dataset import BadImage, ImageFolderDataset
from .transforms import norm_stats

BATCH_AUGMENTS = ('none', 'basic')


def available_bytes():
    """Memory the system can give without swapping (MemAvailable on Linux)."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def estimate_bytes(n_images, image_size):
    """uint8 RGB images at image_size x image_size, times the processes on this machine that each hold one."""
    procs = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    return n_images * 3 * image_size * image_size * procs


def gib(n):
    return f'{n / 2 ** 30:.2f} GiB'


def check_fits(nbytes, available=None):
    """ValueError with the figures when a cache of `nbytes` would exceed the available memory."""
    available = available_bytes() if available is None else available
    if nbytes > available:
        raise UserError(f'--cache=ram needs {gib(nbytes)} but only {gib(available)} of memory is available; '
                        f'use --cache=none (streams from disk) or a smaller --image-size')


class CachedImages(ImageFolderDataset):
    """Images decoded and resized once, held as one uint8 tensor (N, 3, S, S); items are (uint8 image, label),
    or BadImage for a file that could not be decoded (the batch goes on without it, see `collate`)."""

    def __init__(self, samples, classes, image_size, num_workers=0):
        self.samples, self.classes = list(samples), list(classes)
        self.images = torch.zeros((len(self.samples), 3, image_size, image_size), dtype=torch.uint8)
        self.bad = {}
        source = ImageFolderDataset(self.samples, classes, T.Compose([T.Resize((image_size, image_size)),
                                                                      T.PILToTensor()]))
        loader = DataLoader(source, batch_size=64, num_workers=num_workers, collate_fn=list)
        i = 0
        for batch in loader:
            for item in batch:
                if isinstance(item, BadImage):
                    self.bad[i] = item
                else:
                    self.images[i] = item[0]
                i += 1

    def load(self, index):
        if index in self.bad:
            return self.bad[index]
        return self.images[index], self.samples[index][1]

    def finish(self, image, label):
        return image, label  # augmented and normalised per batch, on the device (prepare_batch)


def build_train_val(cfg, classes, train, val, num_workers=0):
    """Cached training and validation datasets; prints the estimate first and refuses what would not fit."""
    if cfg.augment not in BATCH_AUGMENTS:
        raise UserError(f'--cache=ram augments batches on the device with --augment={"|".join(BATCH_AUGMENTS)}; '
                        f'got {cfg.augment!r}: use one of those or --cache=none')
    need = estimate_bytes(len(train) + len(val), cfg.image_size)
    available = available_bytes()
    print(f'cache: {len(train) + len(val)} images at {cfg.image_size} px as uint8 need {gib(need)} '
          f'({gib(available)} available)')
    check_fits(need, available)
    return (CachedImages(train, classes, cfg.image_size, num_workers),
            CachedImages(val, classes, cfg.image_size, num_workers))


def augment_batch(images, augment='basic'):
    """The 'basic' preset on a uint8 batch (N, 3, S, S), on its device: pad-and-crop with edge padding of
    max(1, S // 8), the same distribution as transforms.train_transform's RandomCrop, drawn per image."""
    if augment == 'none':
        return images
    if augment != 'basic':
        raise UserError(f'--cache=ram supports --augment={"|".join(BATCH_AUGMENTS)}, not {augment!r}')
    n, c, h, w = images.shape
    pad = max(1, h // 8)
    # Edge padding then cropping = reading the image at clamped, shifted coordinates.
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=images.device) - pad
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=images.device) - pad
    rows = (torch.arange(h, device=images.device) + dy).clamp_(0, h - 1)
    cols = (torch.arange(w, device=images.device) + dx).clamp_(0, w - 1)
    images = images.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return images.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def normalize(images, mean, std):
    """A float batch in [0, 1] normalised in place as Normalize(mean, std) does."""
    mean = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return images.sub_(mean).div_(std)


def uniform(n, low, high, device):
    return torch.empty((n, 1, 1, 1), device=device).uniform_(low, high)


def flip_batch(images):
    """RandomHorizontalFlip(0.5), drawn per image."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def adjust(images, brightness, contrast):
    """torchvision's adjust_brightness then adjust_contrast on a float batch in [0, 1], with one factor per image
    (tensors of shape (N, 1, 1, 1)): scale and clamp, then blend with the mean of the grayscale image, clamp."""
    images = (images * brightness).clamp_(0, 1)
    weights = torch.tensor([0.2989, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    gray = (images * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    return (contrast * images + (1 - contrast) * gray).clamp_(0, 1)


def jitter_batch(images, strength):
    """ColorJitter(brightness=strength, contrast=strength) per image: factors drawn from
    [max(0, 1 - strength), 1 + strength], brightness first."""
    n, device, low, high = images.shape[0], images.device, max(0.0, 1 - strength), 1 + strength
    return adjust(images, uniform(n, low, high, device), uniform(n, low, high, device))


def erase_batch(images, p, scale=(0.02, 0.33), ratio=(0.3, 3.3), attempts=10):
    """RandomErasing(p) on a normalised batch, per image: with probability p, the first of `attempts` random
    boxes (area a `scale` share of the image, log-uniform aspect `ratio`) that fits is set to 0; none fits,
    nothing is erased -- torchvision's rule, drawn for the whole batch at once."""
    n, _, h, w = images.shape
    device = images.device
    area = h * w * torch.empty((n, attempts), device=device).uniform_(*scale)
    aspect = torch.exp(torch.empty((n, attempts), device=device).uniform_(*torch.log(torch.tensor(ratio)).tolist()))
    bh = torch.sqrt(area * aspect).round().long()
    bw = torch.sqrt(area / aspect).round().long()
    fits = (bh < h) & (bw < w)
    first = fits.float().argmax(1)  # the first attempt that fits (0 when none does; then `fits` says no)
    pick = torch.arange(n, device=device)
    bh, bw, fits = bh[pick, first], bw[pick, first], fits[pick, first]
    top = (torch.rand(n, device=device) * (h - bh + 1)).long()
    left = (torch.rand(n, device=device) * (w - bw + 1)).long()
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    inside = (((rows[None] >= top[:, None]) & (rows[None] < (top + bh)[:, None]))[:, :, None]
              & ((cols[None] >= left[:, None]) & (cols[None] < (left + bw)[:, None]))[:, None, :])
    erase = fits & (torch.rand(n, device=device) < p)
    return images.masked_fill((inside & erase[:, None, None])[:, None], 0.0)


def prepare_batch(images, cfg, train):
    """A uint8 batch from the cache -> the float batch the model sees: for training the `augment` preset, `hflip`,
    `jitter`, then for both the normalisation of `cfg`, then `erasing` for training."""
    if train:
        images = augment_batch(images, cfg.augment)
        if cfg.hflip:
            images = flip_batch(images)
    images = images.float().div_(255)
    if train and cfg.jitter > 0:
        images = jitter_batch(images, cfg.jitter)
    images = normalize(images, *norm_stats(cfg))
    if train and cfg.erasing > 0:
        images = erase_batch(images, cfg.erasing)
    return images
