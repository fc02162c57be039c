"""SqueezeNet 1.1 (Iandola et al., 2016), torchvision's layout."""
import torch
from torchvision.models import squeezenet1_1

from .basic_module import BasicModule


class SqueezeNet(BasicModule):
    head_path = 'classifier.1'

    def forward_features(self, x):
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.net.features(x), 1), 1)


def squeezenet(num_classes, **kwargs):
    return SqueezeNet(squeezenet1_1(weights=None, num_classes=num_classes, **kwargs), num_classes)
