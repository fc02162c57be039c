"""The model registry: a name (case-insensitive) -> the builder in one file per family.

Names are listed without importing torch, so `python main.py help` stays instant; a family's module is
imported only when one of its models is built.
"""
import importlib

# display name -> 'module:builder'
MODELS = {
    'AlexNet': 'models.alexnet:alexnet',
    'SqueezeNet': 'models.squeezenet:squeezenet',
    'ResNet34': 'models.resnet:resnet34',
    'ResNet101': 'models.resnet:resnet101',
    'ResNeSt50': 'models.resnest:resnest50',
}


def list_models():
    """Registered model names, as the user types them."""
    return list(MODELS)


def canonical_name(name):
    """The registered spelling of `name` (any case); ValueError naming the valid ones otherwise."""
    by_lower = {n.lower(): n for n in MODELS}
    if name.lower() not in by_lower:
        raise ValueError(f'unknown model {name!r}; choose one of: {", ".join(MODELS)}')
    return by_lower[name.lower()]


def build(name, num_classes, pretrained_path='', **kwargs):
    """A randomly initialised model (or one started from a local weights file) with `num_classes` outputs."""
    name = canonical_name(name)
    module, builder = MODELS[name].split(':')
    model = getattr(importlib.import_module(module), builder)(num_classes=num_classes, **kwargs)
    model.model_name = name
    if pretrained_path:
        model.load_pretrained(pretrained_path)
    return model
