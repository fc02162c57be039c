"""ResNet34 and ResNet101 (He et al., 2016), torchvision's layout (its weight files load as they are)."""
import torch
from torchvision.models import resnet34 as tv_resnet34, resnet101 as tv_resnet101

from .basic_module import BasicModule


class ResNet(BasicModule):
    def forward_features(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return torch.flatten(n.avgpool(x), 1)


def resnet34(num_classes, **kwargs):
    return ResNet(tv_resnet34(weights=None, num_classes=num_classes, **kwargs), num_classes)


def resnet101(num_classes, **kwargs):
    return ResNet(tv_resnet101(weights=None, num_classes=num_classes, **kwargs), num_classes)
