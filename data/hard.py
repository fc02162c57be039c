"""Hard-example upsampling: k extra copies of the training images a model got wrong, each copy seen
through a random region crop so the copies are not pixel repeats.

    python main.py hard --load-path=checkpoints/<run>/best_model.pth      # writes hard_train.csv, hard_val.csv
    python main.py train --upsample-hard=2 --hard-list=checkpoints/<run>/hard_train.csv
"""
import os

from torchvision import transforms as T

from config import UserError
from . import manifest
from .dataset import BadImage, ImageFolderDataset


class UpsampledDataset(ImageFolderDataset):
    """The training set `base` followed by `copies` of its samples at the indices `hard`. A copy is the sample's
    image squared to image_size and cut to a random region (40-100 % of the area, aspect 3/4..4/3) resized back,
    then goes on as every training image does: the run's transform (with its normalisation), or from the RAM
    cache, the batch augmentation on the device."""

    def __init__(self, base, hard, copies, image_size, scale=(0.4, 1.0)):
        self.base, self.hard = base, list(hard) * copies
        self.samples = base.samples + [base.samples[i] for i in self.hard]
        self.classes = base.classes
        self.region = T.Compose([T.Resize((image_size, image_size)), T.RandomResizedCrop(image_size, scale=scale)])

    @property
    def transform(self):
        return self.base.transform

    @transform.setter
    def transform(self, value):  # the normalisation statistics arrive after the datasets are built
        self.base.transform = value

    def __getitem__(self, index):
        n = len(self.base)
        if index < n:
            return self.base[index]
        item = self.base.load(self.hard[index - n])
        return item if isinstance(item, BadImage) else self.base.finish(self.region(item[0]), item[1])


def listed(cfg):
    """Absolute paths of the images in cfg.hard_list when cfg.upsample_hard asks for copies, else None; read before
    any dataset is built, so that a missing list stops the run first."""
    if cfg.upsample_hard <= 0:
        return None
    if not cfg.hard_list:
        raise UserError('--upsample-hard needs --hard-list=checkpoints/<run>/hard_train.csv; write it with '
                        '`python main.py hard --load-path=checkpoints/<run>/best_model.pth`')
    return {os.path.abspath(r['path']) for r in manifest.read(cfg.hard_list, allow_empty=True)}


def upsample(train_set, cfg, paths):
    """train_set with cfg.upsample_hard extra copies of its images among `paths` (from `listed`; None = none)."""
    if paths is None:
        return train_set
    hard = [i for i, (path, _) in enumerate(train_set.samples) if os.path.abspath(path) in paths]
    print(f'hard examples: {len(hard)} of {len(paths)} listed images are training images; '
          f'{cfg.upsample_hard} extra region-cropped cop{"y" if cfg.upsample_hard == 1 else "ies"} each')
    return UpsampledDataset(train_set, hard, cfg.upsample_hard, cfg.image_size) if hard else train_set
