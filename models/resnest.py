"""ResNeSt50 (Zhang et al., 2020) from the `resnest` package; its weights are key-for-key timm's resnest50d."""
from resnest.torch import resnest50 as _resnest50

from .resnet import ResNet, with_stem


class ResNeSt(ResNet):
    """Same stem / stages / pooled head as torchvision's ResNet, so the feature path is shared."""


def resnest50(num_classes, stem='imagenet', **kwargs):
    return ResNeSt(with_stem(_resnest50(pretrained=False, num_classes=num_classes, **kwargs), stem), num_classes)
