"""The small-image stem: the first layers of a network in the form used for 32 px images (CIFAR), where the
ImageNet form's 4x early downsampling leaves a 32 px input at 8x8 before the first stage (1x1 before SqueezeNet's
and AlexNet's last stages).

- ResNet family (torchvision, resnest, timm resnet / resnest): a 3x3 stride-1 first convolution and no max-pool
  (He et al., 2016, section 4.2, the CIFAR-10 networks).
- AlexNet, SqueezeNet: the first convolution 3x3 stride 1 (their three poolings stay), and every convolution of
  their features followed by batch normalisation: without it, SqueezeNet's small form collapses to a constant
  output under the default recipe from scratch (its training loss stays at ln 10 on the 10 digits), and both
  plain networks stay near chance at 32 px (docs/models.md).
"""
from torch import nn

STEMS = ('auto', 'imagenet', 'small')


def stride_one_conv(conv):
    """A 3x3 stride-1 convolution, padded to keep the size, with `conv`'s channels and bias (new weights)."""
    return nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)


def small_resnet_stem(net):
    """Give a ResNet-like `net` (a `conv1` -- one convolution or a deep stem of several -- and a `maxpool`) the
    small-image stem, in place: a 7x7 first convolution becomes 3x3 stride 1, a deep stem's first (already 3x3)
    convolution stride 1, and the max-pool the identity. Returns `net`."""
    if isinstance(net.conv1, nn.Sequential):
        first = net.conv1[0]
        first.stride = (1, 1)
    else:
        net.conv1 = stride_one_conv(net.conv1)
    net.maxpool = nn.Identity()
    return net


def add_batchnorm(module):
    """Follow every convolution inside `module` by a BatchNorm2d, in place (the convolution becomes item 0 of a
    Sequential, so its weights keep their shape). Returns `module`."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(module, name, nn.Sequential(child, nn.BatchNorm2d(child.out_channels)))
        else:
            add_batchnorm(child)
    return module
