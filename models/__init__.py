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


def parameter_count(name, num_classes, attention='none'):
    """Parameters and buffers of the model `build` makes, counted on the meta device: no memory, no weights."""
    import torch
    with torch.device('meta'):
        model = build(name, num_classes, attention=attention)
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


def build(name, num_classes, pretrained_path='', attention='none', freeze_backbone=False, pretrained='none',
          **kwargs):
    """A randomly initialised model with `num_classes` outputs, or one started from a local weights file
    (`pretrained_path`) or from published weights (`pretrained`: imagenet | timm/<model>.<tag>, see
    models/pretrained.py); `attention` (se | cbam | auto, see `resolve_attention`) is added to every residual
    block of the ResNet family -- starting as the identity on published weights, so that it does not disturb
    them -- and `freeze_backbone` leaves only the final layer trainable."""
    from . import pretrained as published
    name = canonical_name(name)
    attention = resolve_attention(name, attention, pretrained_path, pretrained)
    weights = published.find(name, pretrained)
    if timm_name(name) is not None:
        from .timm_models import timm_model
        model = timm_model(num_classes=num_classes, name=timm_name(name), weights=weights, **kwargs)
    else:
        module, builder = MODELS[name].split(':')
        model = getattr(importlib.import_module(module), builder)(num_classes=num_classes, **kwargs)
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
