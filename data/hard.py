"""Hard-example upsampling: k extra copies of the training images a model got wrong, each copy seen
through a random region crop so the copies are not pixel repeats.

    python main.py hard --load-path=checkpoints/<run>/best_model.pth      # writes hard_train.csv, hard_val.csv
    python main.py train --upsample-hard=2 --hard-list=checkpoints/<run>/hard_train.csv
"""
import os

from torchvision import transforms as T

from config import UserError
from . import manifest
from .dataset import ImageFolderDataset
from .transforms import IMAGENET_MEAN, IMAGENET_STD


def region_crop_transform(image_size, scale=(0.4, 1.0)):
    """A random region (40-100 % of the area, aspect 3/4..4/3) resized back to image_size."""
    return T.Compose([T.Resize((image_size, image_size)), T.RandomResizedCrop(image_size, scale=scale),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class UpsampledDataset(ImageFolderDataset):
    """The training set followed by `copies` of the hard samples, which go through the region crop."""

    def __init__(self, base, hard_samples, copies, image_size):
        extra = ImageFolderDataset(list(hard_samples) * copies, base.classes, region_crop_transform(image_size))
        super().__init__(base.samples + extra.samples, base.classes)
        self.base, self.extra = base, extra

    def __getitem__(self, index):
        n = len(self.base)
        return self.base[index] if index < n else self.extra[index - n]


def upsample(train_set, cfg):
    """train_set with cfg.upsample_hard extra copies of the training images listed in cfg.hard_list."""
    if cfg.upsample_hard <= 0:
        return train_set
    if not cfg.hard_list:
        raise UserError('--upsample-hard needs --hard-list=checkpoints/<run>/hard_train.csv; write it with '
                        '`python main.py hard --load-path=checkpoints/<run>/best_model.pth`')
    listed = {os.path.abspath(r['path']) for r in manifest.read(cfg.hard_list, allow_empty=True)}
    hard = [s for s in train_set.samples if os.path.abspath(s[0]) in listed]
    print(f'hard examples: {len(hard)} of {len(listed)} listed images are training images; '
          f'{cfg.upsample_hard} extra region-cropped cop{"y" if cfg.upsample_hard == 1 else "ies"} each')
    return UpsampledDataset(train_set, hard, cfg.upsample_hard, cfg.image_size) if hard else train_set
