"""Where the model looked: Grad-CAM (Selvaraju et al., 2017) through the pytorch-grad-cam package.

The target layer is chosen per model family (timm's own `feature_info` stages, torchvision's ResNet layer1..4,
the blocks of AlexNet's and SqueezeNet's `features`): the deepest stage whose map is still at least MIN_SIDE
cells wide at the image size. `python main.py explain` (run_report.explain) writes an overlay per image and an
HTML index.
"""

import numpy as np
import torch
from torch import nn

import config

MIN_SIDE = 4  # a coarser map is one colour: ResNet's last stage is 1 x 1 at 32 px, so layer2 (4 x 4) is used there
TILE = 96  # shortest side, in pixels, of an image and of its overlay in the pictures written


class Unsupported(config.UserError):
    """The model has no convolutional feature map that Grad-CAM can weigh (e.g. a vision transformer's tokens)."""


def candidate_layers(model):
    """(name, module, channels or None) of the feature stages of `model`, shallow to deep, by family."""
    net = getattr(model, 'net', model)
    if getattr(net, 'feature_info', None):  # every timm model lists its stages
        return [(f['module'], net.get_submodule(f['module']), f['num_chs']) for f in net.feature_info if f['module']]
    if all(hasattr(net, f'layer{i}') for i in range(1, 5)):  # torchvision's ResNet layout: ResNet, ResNeSt
        return [(f'layer{i}', getattr(net, f'layer{i}'), None) for i in range(1, 5)]
    if isinstance(getattr(net, 'features', None), nn.Sequential):  # AlexNet, SqueezeNet
        skip = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout)
        return [(f'features.{i}', m, None) for i, m in enumerate(net.features) if not isinstance(m, skip)]
    return []


def target_layer(model, image_size):
    """(name, module) Grad-CAM weighs for `model` at `image_size`: the deepest stage whose (N, C, H, W) map is at
    least MIN_SIDE wide, else the one with the widest map. Puts the model in eval mode; Unsupported names the
    model when none of its stages gives such a map."""
    layers, shapes = candidate_layers(model), {}

    def keep_shape(name):
        def hook(_module, _input, out):
            shapes[name] = tuple(out.shape) if torch.is_tensor(out) else ()
        return hook
    hooks = [m.register_forward_hook(keep_shape(name)) for name, m, _ in layers]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    # a 4-d output must be channels-first (Swin's stages are N, H, W, C)
    maps = [(name, m, shapes[name]) for name, m, chs in layers
            if len(shapes.get(name, ())) == 4 and chs in (None, shapes[name][1])]
    if not maps:
        raise Unsupported(f'Grad-CAM needs a convolutional feature map; {getattr(model, "model_name", type(model))} '
                          f'has none that it can weigh (a transformer\'s tokens, or an unknown layout)')
    wide = [m for m in maps if min(m[2][2:]) >= MIN_SIDE]
    name, module, _ = wide[-1] if wide else max(maps, key=lambda m: min(m[2][2:]))
    return name, module


def class_maps(model, layer, images, classes):
    """(N, H, W) Grad-CAM maps in [0, 1] of a normalised batch `images` for one class index per image."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    with GradCAM(model=model, target_layers=[layer]) as cam:
        # an input that asks for its gradient keeps the graph alive when the weights are frozen (--freeze-backbone)
        return cam(input_tensor=images.detach().requires_grad_(True),
                   targets=[ClassifierOutputTarget(int(c)) for c in classes])


def overlay(image, cam):
    """A CHW uint8 image with its (H, W) map in [0, 1] laid over it in jet colours, as CHW uint8."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    return show_cam_on_image(image.transpose(1, 2, 0).astype(np.float32) / 255, cam, use_rgb=True).transpose(2, 0, 1)


