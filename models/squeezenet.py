"""SqueezeNet 1.1 (Iandola et al., 2016), torchvision's layout; with stem 'small' its first convolution has
stride 1, so that a 32 px input still has 4x4 positions at the last Fire modules (1x1 in the ImageNet form), and
each convolution of its features is followed by batch normalisation (models/layers/stem.py says why)."""
import torch
from torchvision.models import squeezenet1_1

from .basic_module import BasicModule
from .layers.stem import add_batchnorm, stride_one_conv


class SqueezeNet(BasicModule):
    head_path = 'classifier.1'

    def forward_features(self, x):
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.net.features(x), 1), 1)


def squeezenet(num_classes, stem='imagenet', **kwargs):
    net = squeezenet1_1(weights=None, num_classes=num_classes, **kwargs)
    if stem == 'small':
        net.features[0] = stride_one_conv(net.features[0])
        add_batchnorm(net.features)
    return SqueezeNet(net, num_classes)
