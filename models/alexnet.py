"""AlexNet (Krizhevsky et al., 2012), torchvision's layout, usable from 32 px up."""
import torch
from torch import nn
from torchvision.models import alexnet as tv_alexnet

from .basic_module import BasicModule


class AlexNet(BasicModule):
    head_path = 'classifier.6'

    def forward_features(self, x):
        x = torch.flatten(self.net.avgpool(self.net.features(x)), 1)
        return self.net.classifier[:6](x)


def alexnet(num_classes, **kwargs):
    net = tv_alexnet(weights=None, num_classes=num_classes, **kwargs)
    # Padded pooling lets 32 px inputs through (unpadded, the third pool meets a 1x1 map); no weights change.
    for i, layer in enumerate(net.features):
        if isinstance(layer, nn.MaxPool2d):
            net.features[i] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return AlexNet(net, num_classes)
