"""ResNet34 and ResNet101 (He et al., 2016), torchvision's layout (its weight files load as they are)."""
import torch
from torchvision.models import resnet34 as tv_resnet34, resnet101 as tv_resnet101

from .basic_module import BasicModule
from .layers.stem import small_resnet_stem


class ResNet(BasicModule):
    def forward_features(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return torch.flatten(n.avgpool(x), 1)


def with_stem(net, stem):
    """`net` as built (stem 'imagenet') or with the small-image stem ('small', models/layers/stem.py)."""
    return small_resnet_stem(net) if stem == 'small' else net


def resnet34(num_classes, stem='imagenet', **kwargs):
    return ResNet(with_stem(tv_resnet34(weights=None, num_classes=num_classes, **kwargs), stem), num_classes)


def resnet101(num_classes, stem='imagenet', **kwargs):
    return ResNet(with_stem(tv_resnet101(weights=None, num_classes=num_classes, **kwargs), stem), num_classes)
