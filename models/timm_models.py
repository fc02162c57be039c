"""EfficientNet-B0..B5 (Tan & Le, 2019), ResNeXt (Xie et al., 2017), SE-ResNeXt (Hu et al., 2018) and any other
timm model by name (`timm/<name>`), built with random initialisation or from published weights that timm loads."""
import functools

import timm
import torch

from .basic_module import BasicModule
from .layers.stem import small_resnet_stem

RESNET_MODULES = ('resnet', 'resnest')  # timm's modules whose models have a ResNet stem (conv1, maxpool)
EFFICIENTNET_MODULES = ('efficientnet',)  # a stride-2 `conv_stem` (EfficientNet, MixNet, MnasNet ...)


def has_small_stem(name):
    """True when timm's model `name` has a small-image form (models/layers/stem.py): ResNet- or EfficientNet-like."""
    return timm.models.is_model_in_modules(name, RESNET_MODULES + EFFICIENTNET_MODULES)


def is_efficientnet(name):
    """True when timm's model `name` is EfficientNet-like (a stride-2 `conv_stem`)."""
    return timm.models.is_model_in_modules(name, EFFICIENTNET_MODULES)


def small_stem(name, net):
    """timm's `net` (model `name`) in its small-image form, in place: a ResNet stem as small_resnet_stem makes it;
    an EfficientNet-like `conv_stem` at stride 1 (its padding keeps the size at either stride)."""
    if is_efficientnet(name):
        net.conv_stem.stride = (1, 1)
        return net
    return small_resnet_stem(net)


class TimmModel(BasicModule):
    """A timm network; its classifier's name comes from the model's own pretrained config."""

    def __init__(self, net, num_classes):
        super().__init__(net, num_classes)
        self.head_path = net.pretrained_cfg.get('classifier', 'fc') if hasattr(net, 'pretrained_cfg') else 'fc'

    def forward_features(self, x):
        return torch.flatten(self.net.forward_head(self.net.forward_features(x), pre_logits=True), 1)


def timm_model(num_classes, name, weights=None, stem='imagenet', **kwargs):
    """timm's `name` with `num_classes` outputs, with the small-image stem for `stem` 'small' (ResNet-like models,
    `has_small_stem`); with `weights` (models.pretrained.Weights) timm loads that file itself (`pretrained=True`:
    its own key filters, the classifier reset for another class count)."""
    if weights is None:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        # PyTorch's default initialisation of the classifier: timm's EfficientNet / MobileNet one is uniform in
        # +-1/sqrt(classes), made for 1000; with 10 classes it starts the loss at ~6.5, not ln 10, and from scratch
        # they stalled near chance (benchmarks/zoo.py)
        for layer in net.get_classifier().modules():
            if hasattr(layer, 'reset_parameters'):
                layer.reset_parameters()
        return TimmModel(small_stem(name, net) if stem == 'small' else net, num_classes)
    from .pretrained import ensure
    net = timm.create_model(weights.name[len('timm/'):], pretrained=True, num_classes=num_classes,
                            pretrained_cfg_overlay={'file': ensure(weights)}, **kwargs)
    print(f'pretrained weights {weights.name} loaded by timm'
          + (f'; head replaced for {num_classes} classes' if num_classes != net.pretrained_cfg.get('num_classes') else ''))
    return TimmModel(net, num_classes)


efficientnet_b0 = functools.partial(timm_model, name='efficientnet_b0')
efficientnet_b1 = functools.partial(timm_model, name='efficientnet_b1')
efficientnet_b2 = functools.partial(timm_model, name='efficientnet_b2')
efficientnet_b3 = functools.partial(timm_model, name='efficientnet_b3')
efficientnet_b4 = functools.partial(timm_model, name='efficientnet_b4')
efficientnet_b5 = functools.partial(timm_model, name='efficientnet_b5')
resnext101_32x8d = functools.partial(timm_model, name='resnext101_32x8d')
seresnext50_32x4d = functools.partial(timm_model, name='seresnext50_32x4d')
seresnext101_32x4d = functools.partial(timm_model, name='seresnext101_32x4d')
