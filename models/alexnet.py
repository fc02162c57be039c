"""AlexNet (Krizhevsky et al., 2012), torchvision's layout, usable from 32 px up; with stem 'small' its first
convolution is 3x3 stride 1 instead of 11x11 stride 4, so that a 32 px input keeps 4x4 positions after the last pooling (1x1 in the ImageNet form), and each convolution
of its features is followed by batch normalisation (models/layers/stem.py says why)."""
import torch
from torch import nn
from torchvision.models import alexnet as tv_alexnet

from .basic_module import BasicModule
from .layers.stem import add_batchnorm, stride_one_conv


class AlexNet(BasicModule):
    head_path = 'classifier.6'

    def forward_features(self, x):
        x = torch.flatten(self.net.avgpool(self.net.features(x)), 1)
        return self.net.classifier[:6](x)


def alexnet(num_classes, stem='imagenet', **kwargs):
    net = tv_alexnet(weights=None, num_classes=num_classes, **kwargs)
    # Padded pooling lets 32 px inputs through (unpadded, the third pool meets a 1x1 map); no weights change.
    for i, layer in enumerate(net.features):
        if isinstance(layer, nn.MaxPool2d):
            net.features[i] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    if stem == 'small':
        net.features[0] = stride_one_conv(net.features[0])
        add_batchnorm(net.features)
    return AlexNet(net, num_classes)
