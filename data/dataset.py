"""Folder datasets: class = sub-folder name (sorted), every image converted to RGB, bad files skipped."""
import os
import random
import sys
from collections import Counter

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from config import UserError
from utils.io import IMG_EXTENSIONS, walk_files



def require_folder(root, hint):
    """UserError unless `root` is a folder, saying whether it is a file or does not exist, then `hint`."""
    if not os.path.isdir(root):
        what = 'is a file, not a folder' if os.path.exists(root) else 'does not exist'
        raise UserError(f'data folder {root} {what}; {hint}')


def find_classes(root):
    """Sorted class sub-folder names of `root`; UserError when it is not a folder or has none."""
    require_folder(root, f'lay images out as {root}/<class name>/<image>')
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith('.'))
    if not classes:
        raise UserError(f'{root} has no class sub-folders; lay images out as {root}/<class name>/<image>')
    return classes


def scan(root, classes):
    """(path, label) for every image under root/<class>/ (any depth), in a deterministic order."""
    samples = []
    for label, name in enumerate(classes):
        samples += [(path, label) for path in walk_files(os.path.join(root, name))]
    if not samples:
        raise UserError(f'{root} holds no images ({", ".join(IMG_EXTENSIONS)}) in its class folders')
    return samples


def short(names, n=10):
    """The first n names as a list, with ' ...' when there are more (for one-line messages)."""
    return f'{list(names)[:n]}{" ..." if len(names) > n else ""}'


def check_classes(classes, samples, source, allow_empty=False):
    """Refuse training samples of fewer than two classes (a one-class model is right on every image) and, unless
    `allow_empty` keeps them as output classes, the classes without a single image, by name."""
    counts = Counter(label for _, label in samples)
    filled = [c for i, c in enumerate(classes) if counts[i]]
    empty = [c for i, c in enumerate(classes) if not counts[i]]
    listed = short(empty)
    if len(filled) < 2:
        raise UserError(f'{source} has training images of {len(filled)} class(es) {filled}'
                               + (f' (without images: {listed})' if empty else '')
                               + '; a classifier needs at least 2 classes: add a sub-folder of images per class')
    if empty and not allow_empty:
        raise UserError(f'{source} has {len(empty)} class(es) without a training image: {listed}; add '
                               f'images, remove them, or give --allow-empty-classes to keep them as output classes')
    if empty:
        print(f'warning: {len(empty)} class(es) without a training image kept as output classes: {listed}',
              file=sys.stderr)


def load_rgb(path):
    """Open any image (grayscale, palette, RGBA, CMYK, 16-bit, EXIF-rotated) as 8-bit RGB."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'):
            arr = np.asarray(img, dtype=np.float32)
            top = 65535.0 if arr.max() > 255 else 255.0
            img = Image.fromarray((arr * (255.0 / top)).clip(0, 255).astype(np.uint8), 'L')
        return img.convert('RGB')


class ImageFolderDataset(Dataset):
    """Images and labels from `samples` [(path, label)]; an undecodable file yields None (see `collate`)."""

    def __init__(self, samples, classes, transform=None):
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform

    @classmethod
    def from_folder(cls, root, classes=None, transform=None):
        """All images of `root`; with `classes` given, the label order follows it and unknown folders are
        refused with the names that do not fit."""
        found = find_classes(root)
        if classes is not None:
            unknown = [c for c in found if c not in classes]
            if unknown:
                raise UserError(f'{root} has classes the model was not trained on: {unknown[:10]}'
                                f'{" ..." if len(unknown) > 10 else ""}')
        return cls(scan(root, classes if classes is not None else found), classes or found, transform)

    @property
    def targets(self):
        return [label for _, label in self.samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        item = self.load(index)
        return item if isinstance(item, BadImage) else self.finish(*item)

    def load(self, index):
        """(decoded RGB image, label) of sample `index`, or BadImage for a file that cannot be decoded."""
        path, label = self.samples[index]
        try:
            return load_rgb(path), label
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            return BadImage(path, f'{type(e).__name__}: {str(e).replace(repr(path), "").replace(path, "").strip()}')

    def finish(self, image, label):
        """(image through the transform, label): what the loader receives for a decoded image."""
        return (self.transform(image) if self.transform else image), label


class BadImage:
    """Marks a sample whose file could not be decoded, so the batch goes on without it."""

    def __init__(self, path, reason):
        self.path, self.reason = path, reason


def collate(batch):
    """default_collate over the readable samples; returns (images, labels, bad) with bad = [(path, reason)].
    A batch a dataset delivered whole (cache.CachedImages.__getitems__, a tuple) is already that."""
    from torch.utils.data import default_collate
    if isinstance(batch, tuple):
        return batch
    bad = [(b.path, b.reason) for b in batch if isinstance(b, BadImage)]
    good = [b for b in batch if not isinstance(b, BadImage)]
    if not good:
        return None, None, bad
    images, labels = default_collate(good)
    return images, labels, bad


class BadFileLog:
    """Warns once per undecodable file (naming it) and keeps the count for the summary."""

    def __init__(self):
        self.seen = {}

    def add(self, bad):
        for path, reason in bad:
            if path not in self.seen:
                self.seen[path] = reason
                print(f'warning: skipped unreadable image {path} ({reason})', file=sys.stderr)

    def summary(self):
        return f'{len(self.seen)} unreadable image(s) skipped' if self.seen else ''


def stratified_split(targets, val_ratio, seed=0):
    """(train_idx, val_idx): val_ratio of every class (at least one image of a class with two or more)."""
    rng = random.Random(seed)
    by_class = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    train, val = [], []
    for label in sorted(by_class):
        idx = by_class[label]
        rng.shuffle(idx)
        n_val = min(len(idx) - 1, max(1, round(len(idx) * val_ratio))) if len(idx) > 1 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def auto_image_size(samples, max_files=200, seed=0):
    """Median side of up to `max_files` sampled images, rounded to a multiple of 32, within 32..224."""
    paths = [p for p, _ in samples]
    paths = random.Random(seed).sample(paths, min(max_files, len(paths)))
    sides = []
    for p in paths:
        try:
            with Image.open(p) as img:
                sides.append((img.width + img.height) / 2)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            continue
    if not sides:
        return 224
    return int(min(224, max(32, 32 * round(float(np.median(sides)) / 32))))
