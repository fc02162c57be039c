"""A trained model as a Python object: `main.load(path)` -> Predictor, whose `predict` and `predict_proba` classify
images from a script as `predict` does from the command line (the same loading, preprocessing and loop)."""
import os

import numpy as np
import torch
from PIL import Image

from config import UserError
from data import loaders, transforms
from data.dataset import BadFileLog, ImageFolderDataset
from utils.evaluate.loop import check_settings, find_images, load_for_eval, predictions, wrap


class Images(ImageFolderDataset):
    """Paths and decoded images (PIL) to classify, each keyed by its position."""

    def __init__(self, items, transform):
        super().__init__([(item, i) for i, item in enumerate(items)], ['?'], transform)

    def load(self, index):
        item, key = self.samples[index]
        return super().load(index) if isinstance(item, str) else (item, key)


def as_items(images):
    """A flat list of paths and PIL images from what `Predictor.predict` takes (see there)."""
    if isinstance(images, (str, os.PathLike)):
        path = os.fspath(images)
        return [os.path.join(path, name) for name in find_images(path)] if os.path.isdir(path) else [path]
    if isinstance(images, (Image.Image, np.ndarray, torch.Tensor)) and not batched(images):
        return [as_image(images)]
    return [item for image in images for item in as_items(image)]


def batched(images):
    """Whether an array or tensor holds several images: N x H x W x C (numpy) or N x C x H x W (torch)."""
    return not isinstance(images, Image.Image) and images.ndim == 4


def as_image(image):
    """One image as PIL RGB: a PIL image; a numpy array HxW or HxWxC of uint8; a torch tensor CxHxW, uint8 or float
    in 0..1."""
    if isinstance(image, Image.Image):
        return image.convert('RGB')
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or not (image.dtype == torch.uint8 or image.is_floating_point()):
            raise UserError(f'a torch image is C x H x W, uint8 or float in 0..1; got {tuple(image.shape)} '
                            f'{image.dtype}')
        from torchvision.transforms.functional import to_pil_image
        image = image.detach().cpu()
        return to_pil_image(image if image.dtype == torch.uint8 else image.clamp(0, 1)).convert('RGB')
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise UserError(f'a numpy image is H x W (x C) of uint8; got shape {image.shape} {image.dtype}')
    return Image.fromarray(image).convert('RGB')


class Predictor:
    """The model of a checkpoint (.pth) or an exported file (.onnx, .torchscript) with its own preprocessing (image
    size, interpolation, normalisation: from the file, as val / testforacc / predict use it); `settings` are the
    runtime settings of those commands (batch_size, num_workers, use_gpu, tta, tta_merge, head)."""

    def __init__(self, cfg):
        check_settings(cfg)
        model, self.plan, ckpt, self.device = load_for_eval(cfg)
        self.model = wrap(model, self.plan)
        self.classes = list(ckpt['classes'])
        self.transform = transforms.eval_transform(self.plan, self.plan.image_size)

    def predict_proba(self, images):
        """(N, classes) numpy array of probabilities, rows in the order of `images`: a path, a folder (every image
        under it, sorted as `predict` sorts them), a PIL image, a numpy array (H x W x C uint8, or N of them), a torch
        tensor (C x H x W uint8 or float in 0..1, or N of them), or a list of any of those. The row of a file that
        cannot be read is NaN."""
        items = as_items(images)
        found = predictions(self.model, loaders.eval_loader(Images(items, self.transform), self.plan), self.device,
                            self.plan, BadFileLog(), 'predict')
        probs = np.full((len(items), len(self.classes)), np.nan)
        probs[found['keys']] = found['probs']
        return probs

    def predict(self, images):
        """The class name of each image (None for a file that cannot be read); what `images` may be: predict_proba."""
        probs = self.predict_proba(images)
        return [None if np.isnan(p).any() else self.classes[int(p.argmax())] for p in probs]
