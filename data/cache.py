"""The image cache (`--cache=ram|gpu`, or `auto`, the default, which picks one): every image decoded and
resized to the working size once, kept as uint8 in the host's memory (ram) or on the CUDA device (gpu), served
a whole batch at a time, and augmented per batch on the training device (finish_batch, below): the
`basic` and `resized` presets, `jitter`, the normalisation (ImageNet's or the training set's own) and
`erasing`, in the order the per-image transforms apply them. With `gpu` an epoch never touches the host.

The memory it takes is estimated and printed before anything is decoded; an asked-for cache that would not fit
is refused with the figures, and `auto` streams from disk instead, saying why. Cached eval tensors equal the
uncached ones bit for bit.
"""
import math
import os

import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T

import config
from .dataset import BadImage, ImageFolderDataset
from .transforms import norm_stats

CACHES = ('auto', 'none', 'ram', 'gpu')
BATCH_AUGMENTS = ('none', 'basic', 'resized')
ROOM = 0.5  # auto caches only images that leave at least half of the free memory to the model and the rest


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


def check_fits(nbytes, available=None, kind='ram'):
    """UserError with the figures when a cache of `nbytes` would exceed the available memory."""
    available = available_bytes() if available is None else available
    if nbytes > available:
        where = 'of memory' if kind == 'ram' else 'on the GPU'
        raise config.UserError(f'--cache={kind} needs {gib(nbytes)} but only {gib(available)} {where} is available; '
                               f'use --cache=none (streams from disk) or a smaller --image-size')


def choose(cfg, n_images):
    """The cache to train with: cfg.cache when it names one ('none', or 'ram' / 'gpu', refused in one line when it
    cannot work); for 'auto', the GPU cache when training on CUDA and the images fit comfortably (ROOM) in the
    device's free memory, else the RAM cache when they fit comfortably in the available memory and the
    augmentation runs on batches, else none -- printing which and why."""
    if cfg.cache == 'none':
        return 'none'
    cuda = config.on_cuda(cfg)
    per_image = f'--augment={cfg.augment} runs per image (batches run {"|".join(BATCH_AUGMENTS)})'
    if cfg.cache in ('ram', 'gpu'):
        if cfg.augment not in BATCH_AUGMENTS:
            raise config.UserError(f'--cache={cfg.cache}: {per_image}; use one of those or --cache=none')
        if cfg.cache == 'gpu' and not cuda:
            raise config.UserError('--cache=gpu needs CUDA and --use-gpu; use --cache=ram or --cache=auto')
    if cfg.cache == 'auto' and cfg.augment not in BATCH_AUGMENTS:
        print(f'cache: none, streaming from disk: {per_image}')
        return 'none'
    if cfg.cache == 'gpu' or (cfg.cache == 'auto' and cuda):
        need, free = n_images * 3 * cfg.image_size ** 2, torch.cuda.mem_get_info()[0]
        print(f'cache: {n_images} images at {cfg.image_size} px as uint8 need {gib(need)} on the GPU '
              f'({gib(free)} free)')
        if cfg.cache == 'gpu':
            check_fits(need, free, 'gpu')
            return 'gpu'
        if need <= ROOM * free:
            print('cache: gpu (auto): the images stay on the device, an epoch never touches the host')
            return 'gpu'
    need, available = estimate_bytes(n_images, cfg.image_size), available_bytes()
    print(f'cache: {n_images} images at {cfg.image_size} px as uint8 need {gib(need)} ({gib(available)} available)')
    if cfg.cache == 'ram':
        check_fits(need, available)
        return 'ram'
    if need <= ROOM * available:
        print('cache: ram (auto): decoded once, augmented per batch on the training device')
        return 'ram'
    print(f'cache: none, streaming from disk: {gib(need)} is more than {ROOM:.0%} of the available memory')
    return 'none'


class CachedImages(ImageFolderDataset):
    """Images decoded and resized once, held as one uint8 tensor (N, 3, S, S) on `device` with their labels.
    Items are (uint8 image, label), or BadImage for a file that could not be decoded; a DataLoader takes whole
    batches through `__getitems__`: one gather on the device, the unreadable files reported and left out."""

    def __init__(self, samples, classes, image_size, num_workers=0, device='cpu', interpolation='bilinear'):
        self.samples, self.classes = list(samples), list(classes)
        self.images = torch.zeros((len(self.samples), 3, image_size, image_size), dtype=torch.uint8, device=device)
        self.labels = torch.tensor(self.targets, dtype=torch.long, device=device)
        self.bad = {}
        resize = T.Resize((image_size, image_size), interpolation=T.InterpolationMode(interpolation))
        source = ImageFolderDataset(self.samples, classes, T.Compose([resize, T.PILToTensor()]))
        loader = DataLoader(source, batch_size=64, num_workers=num_workers, collate_fn=list)
        start = 0
        for batch in loader:
            chunk = torch.zeros((len(batch), 3, image_size, image_size), dtype=torch.uint8)
            for k, item in enumerate(batch):
                if isinstance(item, BadImage):
                    self.bad[start + k] = item
                else:
                    chunk[k] = item[0]
            self.images[start:start + len(batch)] = chunk  # one copy per decoded batch, also to the GPU
            start += len(batch)

    def load(self, index):
        if index in self.bad:
            return self.bad[index]
        return self.images[index], self.samples[index][1]

    def finish(self, image, label):
        return image, label  # augmented and normalised per batch, on the device (prepare_batch)

    def __getitems__(self, indices):
        """The batch `indices` as (uint8 images, labels, [(path, reason)] of the unreadable ones), on the cache's
        device; `dataset.collate` passes it through."""
        bad = [self.bad[i] for i in indices if i in self.bad]
        if bad:
            indices = [i for i in indices if i not in self.bad]
        bad = [(b.path, b.reason) for b in bad]
        if not indices:
            return None, None, bad
        index = torch.as_tensor(indices).to(self.images.device, non_blocking=True)
        return self.images[index], self.labels[index], bad


def build_train_val(cfg, classes, train, val, num_workers=0):
    """Cached training and validation datasets, in the host's memory or on the GPU (cfg.cache, as `choose`
    decided it); `num_workers` processes decode."""
    device = torch.device('cuda', torch.cuda.current_device()) if cfg.cache == 'gpu' else torch.device('cpu')
    return (CachedImages(train, classes, cfg.image_size, num_workers, device, cfg.interpolation),
            CachedImages(val, classes, cfg.image_size, num_workers, device, cfg.interpolation))


def augment_batch(images, augment='basic'):
    """The preset `augment` on a batch (N, 3, S, S), on its device, drawn per image: 'basic' pad-and-crop with
    edge padding of max(1, S // 8), the distribution of transforms.train_transform's RandomCrop (any dtype);
    'resized' RandomResizedCrop(S, scale=(0.6, 1)) (a float batch, bilinear)."""
    if augment == 'none':
        return images
    if augment == 'resized':
        return resized_crop_batch(images.float())
    if augment != 'basic':
        raise config.UserError(f'the cache supports --augment={"|".join(BATCH_AUGMENTS)}, not {augment!r}')
    n, c, h, w = images.shape
    pad = max(1, h // 8)
    # Edge padding then cropping = reading the image at clamped, shifted coordinates.
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=images.device) - pad
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=images.device) - pad
    rows = (torch.arange(h, device=images.device) + dy).clamp_(0, h - 1)
    cols = (torch.arange(w, device=images.device) + dx).clamp_(0, w - 1)
    images = images.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return images.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def draw_boxes(n, h, w, scale, ratio, attempts, device, inclusive):
    """torchvision's box draw of RandomResizedCrop (`inclusive`: a box up to the whole image) and RandomErasing
    (a box smaller than the image), per image for a batch of n: the first of `attempts` boxes of area a `scale`
    share of h x w and log-uniform aspect width / height in `ratio` that fits, at a uniform position.
    Returns long tensors (top, left, height, width) and a bool tensor `found` (no attempt fitted: False)."""
    area = h * w * torch.empty((n, attempts), device=device).uniform_(*scale)
    aspect = torch.exp(torch.empty((n, attempts), device=device).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    bw = torch.sqrt(area * aspect).round().long()
    bh = torch.sqrt(area / aspect).round().long()
    fits = (bh > 0) & (bw > 0) & (bh <= h) & (bw <= w) if inclusive else (bh < h) & (bw < w)
    first = fits.float().argmax(1)  # the first attempt that fits (0 when none does; then `found` says no)
    pick = torch.arange(n, device=device)
    bh, bw, found = bh[pick, first], bw[pick, first], fits[pick, first]
    top = (torch.rand(n, device=device) * (h - bh + 1)).long()
    left = (torch.rand(n, device=device) * (w - bw + 1)).long()
    return top, left, bh, bw, found


def crop_resize(images, top, left, height, width):
    """Each float image's box (top, left, height, width) resized back to the batch's side, bilinear (pixel
    centres aligned, as F.interpolate with align_corners=False), in one torchvision.ops.roi_align call."""
    from torchvision.ops import roi_align
    n, side = images.shape[0], images.shape[-1]
    boxes = torch.stack([torch.arange(n, device=images.device), left, top, left + width, top + height], 1)
    return roi_align(images, boxes.to(images.dtype), side, sampling_ratio=1, aligned=True)


def resized_crop_batch(images, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3)):
    """RandomResizedCrop(S, scale, ratio) of a float batch of squares, per image; when no draw fits, the whole
    image (torchvision's fallback for a square)."""
    n, _, h, w = images.shape
    top, left, bh, bw, found = draw_boxes(n, h, w, scale, ratio, 10, images.device, inclusive=True)
    top, left = top.where(found, 0), left.where(found, 0)
    bh, bw = bh.where(found, h), bw.where(found, w)
    return crop_resize(images, top, left, bh, bw)


def normalize(images, mean, std):
    """A float batch in [0, 1] normalised in place as Normalize(mean, std) does."""
    # built on the host and copied without waiting: a blocking copy would stall every step on the GPU
    mean = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1).to(images.device, non_blocking=True)
    std = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1).to(images.device, non_blocking=True)
    return images.sub_(mean).div_(std)


def uniform(n, low, high, device):
    return torch.empty((n, 1, 1, 1), device=device).uniform_(low, high)


def adjust(images, brightness, contrast):
    """torchvision's adjust_brightness then adjust_contrast on a float batch in [0, 1], with one factor per image
    (tensors of shape (N, 1, 1, 1)): scale and clamp, then blend with the mean of the grayscale image, clamp."""
    images = (images * brightness).clamp_(0, 1)
    weights = torch.tensor([0.2989, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1).to(images.device,
                                                                                         non_blocking=True)
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
    # RandomErasing's ratio is height / width: the reciprocal range draws the same boxes
    top, left, bh, bw, fits = draw_boxes(n, h, w, scale, (1 / ratio[1], 1 / ratio[0]), attempts, device, False)
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    inside = (((rows[None] >= top[:, None]) & (rows[None] < (top + bh)[:, None]))[:, :, None]
              & ((cols[None] >= left[:, None]) & (cols[None] < (left + bw)[:, None]))[:, None, :])
    erase = fits & (torch.rand(n, device=device) < p)
    return images.masked_fill((inside & erase[:, None, None])[:, None], 0.0)


def prepare_batch(images, cfg, train):
    """A uint8 batch from the cache -> the float batch the model sees: for training the `augment` preset and
    `jitter`, then for both the normalisation of `cfg`, then `erasing` for training."""
    if train:
        images = augment_batch(images, cfg.augment)  # uint8 stays uint8; 'resized' gives floats in 0..255
    images = images.float().div_(255)
    if train and cfg.jitter > 0:
        images = jitter_batch(images, cfg.jitter)
    images = normalize(images, *norm_stats(cfg))
    if train and cfg.erasing > 0:
        images = erase_batch(images, cfg.erasing)
    return images


def use_channels_last(cfg, device):
    return device.type == 'cuda' and cfg.channels_last != 'off'


def finish_batch(images, device, cfg, train):
    """Images ready for the model on `device`: uint8 batches from the cache (RAM or GPU) are augmented (train) and
    normalised here, on the device (prepare_batch); float batches pass through. channels_last on CUDA when
    set."""
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = prepare_batch(images, cfg, train)
    if use_channels_last(cfg, device):
        images = images.contiguous(memory_format=torch.channels_last)
    return images
