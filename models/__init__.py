"""The model registry: a name (case-insensitive) -> the builder in one file per family.

Names are listed without importing torch, so `python main.py help` stays instant; a family's module is
imported only when one of its models is built.
"""
import importlib

import config

from .registry import MODELS, TIMM_PREFIX, canonical_name, list_models, timm_name  # noqa: F401 (the registry's API)

ATTENTION_MODELS = ('ResNet34', 'ResNet101')


def resolve_attention(name, attention, pretrained_path='', pretrained='none'):
    """`attention` with 'auto' made concrete: cbam for the ResNet family trained from scratch (the best recipe
    measured on small data, docs/tricks.md), none for other models and with --pretrained weights;
    starting from `pretrained_path`, what that checkpoint of this toolkit was trained with, or none for other
    weights files."""
    attention, name = str(attention).lower(), canonical_name(name)
    if attention == 'auto':
        if str(pretrained).lower() != 'none':
            return 'none'
        if pretrained_path:
            from utils.io import stored_settings
            stored = str(stored_settings(pretrained_path).get('attention', 'none')).lower()
            return stored if stored in ('se', 'cbam') and name in ATTENTION_MODELS else 'none'
        return 'cbam' if name in ATTENTION_MODELS else 'none'
    if attention != 'none' and name not in ATTENTION_MODELS:
        raise config.UserError(f'--attention={attention} works with {" and ".join(ATTENTION_MODELS)}, not {name}; '
                               f'use --attention=none')
    return attention


SMALL_STEM_MODELS = ('AlexNet', 'SqueezeNet', 'ResNet34', 'ResNet101', 'ResNeSt50')
SMALL_STEM_MAX_SIZE = 96  # stem auto: the small stem up to this image side, trained from scratch (the suite's largest)
# stem auto takes the small form for these, and for the EfficientNet family (`small_by_default`): their ImageNet forms
# leave a 32 px image at 1x1 and sit near chance on the suite's datasets at 32-96 px (AlexNet 1.9-36.9 % test after
# 10 epochs, the small form 50.0-99.2 %; EfficientNet-B0 55.3 % on the digits, the small form 91.4 %:
# benchmarks/zoo.py, docs/models.md). The ResNet family learns with the ImageNet stem at 32 px (the suite's defaults)
# and its small form costs 5-10x the time, so auto keeps imagenet there; --stem=small asks for it.
SMALL_STEM_AUTO = ('AlexNet', 'SqueezeNet')


def has_small_stem(name):
    """True when `stem` 'small' applies to model `name`: the registry's ResNet family, AlexNet and SqueezeNet, and
    timm's ResNet-like models (timm resnet* / resnest*, so also ResNeXt and SE-ResNeXt)."""
    name = canonical_name(name)
    if name in SMALL_STEM_MODELS:
        return True
    from .timm_models import has_small_stem as timm_has_small_stem
    return timm_name(name) is not None and timm_has_small_stem(timm_name(name))


def small_by_default(name):
    """True for the models whose `stem` auto is small at small sizes: AlexNet, SqueezeNet and the EfficientNet family
    (timm's efficientnet module)."""
    name = canonical_name(name)
    if name in SMALL_STEM_AUTO:
        return True
    from .timm_models import is_efficientnet
    return timm_name(name) is not None and is_efficientnet(timm_name(name))


def resolve_stem(name, stem, image_size, pretrained_path='', pretrained='none'):
    """`stem` with 'auto' made concrete: small for AlexNet, SqueezeNet and EfficientNet (`small_by_default`) trained
    from scratch at `image_size` <= 96 px, where their ImageNet forms' early downsampling leaves too few positions
    to learn from; imagenet otherwise -- for the ResNet family, whose small form costs 5-10x the time, and with
    --pretrained weights, which were trained with it; starting from `pretrained_path`, the stem that checkpoint of
    this toolkit was trained with (imagenet for other weights files and older checkpoints).
    'auto' stays 'auto' while the image size is unknown (0). An explicit 'small' that the model or the weights
    cannot take is one UserError line."""
    from .layers.stem import STEMS
    stem, name = config.check_choice('stem', stem, STEMS), canonical_name(name)
    published = str(pretrained).lower() != 'none'
    if stem == 'auto':
        if published:
            return 'imagenet'
        if pretrained_path:
            from utils.io import stored_settings
            return str(stored_settings(pretrained_path).get('stem', config.LEGACY['stem']))
        if not image_size:
            return 'auto'  # decided once the image size is known
        return 'small' if small_by_default(name) and image_size <= SMALL_STEM_MAX_SIZE else 'imagenet'
    if stem == 'small' and not has_small_stem(name):
        raise config.UserError(f'--stem=small works with the ResNet and EfficientNet families, AlexNet and '
                               f'SqueezeNet, not {name}; use --stem=imagenet')
    if stem == 'small' and published:
        raise config.UserError(f'--pretrained={pretrained} weights were trained with the ImageNet stem; use '
                               f'--stem=imagenet (or auto)')
    return stem


def parameter_count(name, num_classes, attention='none', stem='imagenet'):
    """Parameters and buffers of the model `build` makes, counted on the meta device: no memory, no weights."""
    import torch
    with torch.device('meta'):
        model = build(name, num_classes, attention=attention, stem=stem)
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


def build(name, num_classes, pretrained_path='', attention='none', freeze_backbone=False, pretrained='none',
          stem='imagenet', image_size=0, **kwargs):
    """A randomly initialised model with `num_classes` outputs, or one started from a local weights file
    (`pretrained_path`) or from published weights (`pretrained`: imagenet | timm/<model>.<tag>, see
    models/pretrained.py); `attention` (se | cbam | auto, see `resolve_attention`) is added to every residual
    block of the ResNet family -- starting as the identity on published weights, so that it does not disturb
    them --, `stem` (imagenet | small | auto at `image_size`, see `resolve_stem`) is the form of the first layers,
    and `freeze_backbone` leaves only the final layer trainable."""
    from . import pretrained as published
    name = canonical_name(name)
    attention = resolve_attention(name, attention, pretrained_path, pretrained)
    stem = resolve_stem(name, stem, image_size, pretrained_path, pretrained)
    if stem == 'auto':
        raise ValueError('stem auto needs the image size: give image_size, or a resolved stem')
    weights = published.find(name, pretrained)
    if timm_name(name) is not None:
        from .timm_models import timm_model
        model = timm_model(num_classes=num_classes, name=timm_name(name), weights=weights, stem=stem, **kwargs)
    else:
        module, builder = MODELS[name].split(':')
        model = getattr(importlib.import_module(module), builder)(num_classes=num_classes, stem=stem, **kwargs)
    model.model_name = name
    if attention != 'none':
        from .layers.attention import add_attention
        add_attention(model.net, attention, identity=weights is not None)
    if pretrained_path:
        model.load_pretrained(pretrained_path)
    if weights is not None and weights.library != 'timm':
        published.load_into(model, weights)
    if freeze_backbone:
        model.freeze_backbone()
    return model
