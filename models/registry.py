"""The registry's names: a display name (any case) -> 'module:builder' in one file per family, without importing
torch, so that `python main.py help` stays instant."""
import config

# display name -> 'module:builder'
MODELS = {
    'AlexNet': 'models.alexnet:alexnet',
    'SqueezeNet': 'models.squeezenet:squeezenet',
    'ResNet34': 'models.resnet:resnet34',
    'ResNet101': 'models.resnet:resnet101',
    'ResNeSt50': 'models.resnest:resnest50',
    'EfficientNet-B0': 'models.timm_models:efficientnet_b0',
    'EfficientNet-B1': 'models.timm_models:efficientnet_b1',
    'EfficientNet-B2': 'models.timm_models:efficientnet_b2',
    'EfficientNet-B3': 'models.timm_models:efficientnet_b3',
    'EfficientNet-B4': 'models.timm_models:efficientnet_b4',
    'EfficientNet-B5': 'models.timm_models:efficientnet_b5',
    'ResNeXt101_32x8d': 'models.timm_models:resnext101_32x8d',
    'SE-ResNeXt50_32x4d': 'models.timm_models:seresnext50_32x4d',
    'SE-ResNeXt101_32x4d': 'models.timm_models:seresnext101_32x4d',
}
TIMM_PREFIX = 'timm/'  # --model=timm/<any timm model name>


def list_models():
    """Registered model names, as the user types them."""
    return list(MODELS)


def canonical_name(name):
    """The registered spelling of `name` (any case), or timm/<name> for a model timm has; the one line naming
    the valid ones otherwise (config.check_choice)."""
    return config.check_choice('model', name, list(MODELS) + [config.TIMM])


def timm_name(name):
    """The timm model name behind a registered (or timm/<name>) model; None for the torchvision / resnest ones."""
    name = canonical_name(name)
    if name.startswith(TIMM_PREFIX):
        return name[len(TIMM_PREFIX):]
    module, builder = MODELS[name].split(':')
    return builder if module == 'models.timm_models' else None
