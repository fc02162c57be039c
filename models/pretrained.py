"""Published weights (--pretrained) through each family's own library and cache.

`imagenet` takes the family's ImageNet weights: torchvision's weights API for AlexNet, SqueezeNet, ResNet34 and
ResNet101, the resnest package's file for ResNeSt50, timm's default tag for the timm-built models (EfficientNet,
ResNeXt, SE-ResNeXt, timm/<name>); `timm/<model>.<tag>` names one Hugging Face file of a timm model. Files are
looked for where their library keeps them (torch hub's checkpoints folder, the Hugging Face cache), so a cache
copied from a machine with internet works offline; when a file is absent and cannot be downloaded, one line names
it, the folder it belongs in and the command that fetches it.
"""
import os
from dataclasses import dataclass

import config
from .registry import canonical_name, timm_name

# registry name -> torchvision builder (its weights enum comes from torchvision.models.get_model_weights)
TORCHVISION = {'AlexNet': 'alexnet', 'SqueezeNet': 'squeezenet1_1', 'ResNet34': 'resnet34', 'ResNet101': 'resnet101'}
RESNEST = {'ResNeSt50': 'resnest50'}
SPECS = 'none, imagenet or timm/<model>.<tag> (e.g. timm/resnet34.a1_in1k)'


@dataclass
class Weights:
    """One weights file: which library loads it, under what name, where its cache keeps it, how to fetch it."""
    library: str      # torchvision | resnest | timm
    name: str         # e.g. ResNet34_Weights.IMAGENET1K_V1, resnest50, timm/efficientnet_b0.ra_in1k
    folder: str       # the cache folder the file is looked for in
    filename: str
    fetch: str        # one command that fetches it on a machine with internet
    image_size: int   # the side the weights were trained at
    url: str = ''     # torch hub download (torchvision, resnest, timm weights outside the Hugging Face hub)
    repo: str = ''    # Hugging Face repo id (timm)
    # the preprocessing they were trained with: input statistics, resize interpolation, centre-crop share
    mean: tuple = config.IMAGENET_MEAN
    std: tuple = config.IMAGENET_STD
    interpolation: str = 'bilinear'
    crop_pct: float = 0.875

    @property
    def path(self):
        return os.path.join(self.folder, self.filename)


def offline():
    """HF_HUB_OFFLINE=1 (the Hugging Face switch) stops every download, torch hub's too: a missing file then
    fails at once instead of after the network's timeouts."""
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def find(model_name, spec):
    """The Weights that --pretrained=`spec` names for `model_name` (None for none); UserError for a spec that
    does not exist or does not fit the model. Looks nothing up on disk."""
    name, spec = canonical_name(model_name), str(spec).strip()
    if spec.lower() == 'none':
        return None
    hub = spec.lower().startswith('timm/')
    if spec.lower() != 'imagenet' and not hub:
        raise config.UserError(f'unknown --pretrained={spec!r}; choose {SPECS}')
    arch = timm_name(name)
    if arch is None:
        if hub:
            raise config.UserError(f'--pretrained={spec} is a timm model\'s file, {name} is built by '
                                   f'{"resnest" if name in RESNEST else "torchvision"}: use --pretrained=imagenet, '
                                   f'or --model=timm/{spec[5:].split(".")[0]}')
        return _torch_hub_family(name)
    return _timm(name, arch, spec[5:] if hub else arch)


def _torch_hub_family(name):
    import torch
    if name in RESNEST:
        from resnest.torch.resnest import resnest_model_urls
        builder = RESNEST[name]
        url, label, size = resnest_model_urls[builder], builder, 224
        fetch = f'python -c "import resnest.torch as r; r.{builder}(pretrained=True)"'
        preprocessing = {}  # ImageNet's statistics, bilinear (the resnest package's training)
    else:
        from torchvision.models import get_model_weights
        builder = TORCHVISION[name]
        weights = get_model_weights(builder).DEFAULT
        url, label = weights.url, f'{type(weights).__name__}.{weights.name}'
        preset = weights.transforms()  # the weights' own record: statistics, interpolation, resize and crop
        size = preset.crop_size[0]
        preprocessing = dict(mean=tuple(preset.mean), std=tuple(preset.std), interpolation=preset.interpolation.value,
                             crop_pct=size / preset.resize_size[0])
        fetch = f'python -c "import torchvision; torchvision.models.{builder}(weights=\'{weights.name}\')"'
    folder = os.path.join(torch.hub.get_dir(), 'checkpoints')
    return Weights('resnest' if name in RESNEST else 'torchvision', label, folder, os.path.basename(url), fetch,
                   size, url=url, **preprocessing)


def _timm(name, arch, tagged):
    import torch
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg, split_model_name_tag
    base, tag = split_model_name_tag(tagged)
    if base != arch:
        raise config.UserError(f'--pretrained=timm/{tagged} holds {base} weights, the model is {name} ({arch}); '
                               f'use --model=timm/{base} or --pretrained=imagenet')
    try:
        cfg = get_pretrained_cfg(tagged)
    except RuntimeError:  # an unknown tag
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise config.UserError(f'timm has no pretrained weights named {tagged!r}; '
                               f'`python -c "import timm; print(timm.list_pretrained(\'{arch}*\'))"` lists them')
    tagged = f'{arch}.{cfg.tag}' if cfg.tag else arch
    fetch = f'python -c "import timm; timm.create_model(\'{tagged}\', pretrained=True)"'
    from timm.data import resolve_data_config
    data = resolve_data_config(pretrained_cfg=cfg.to_dict())  # the weights' own statistics, size, resize and crop
    size = data['input_size'][-1]
    preprocessing = dict(mean=tuple(data['mean']), std=tuple(data['std']), interpolation=data['interpolation'],
                         crop_pct=data['crop_pct'])
    if cfg.hf_hub_id:
        from huggingface_hub.file_download import repo_folder_name
        folder = os.path.join(constants.HF_HUB_CACHE, repo_folder_name(repo_id=cfg.hf_hub_id, repo_type='model'))
        return Weights('timm', 'timm/' + tagged, folder, cfg.hf_hub_filename or 'model.safetensors', fetch, size,
                       repo=cfg.hf_hub_id, **preprocessing)
    folder = os.path.join(torch.hub.get_dir(), 'checkpoints')
    return Weights('timm', 'timm/' + tagged, folder, os.path.basename(cfg.url), fetch, size, url=cfg.url,
                   **preprocessing)


def ensure(weights):
    """The weights file's path in its library's cache, downloaded through that library when absent and online;
    UserError naming the missing file, its folder and the fetch command otherwise."""
    try:
        if weights.repo:
            from huggingface_hub import hf_hub_download, try_to_load_from_cache
            cached = try_to_load_from_cache(weights.repo, weights.filename)
            return cached if isinstance(cached, str) else hf_hub_download(weights.repo, weights.filename)
        if not os.path.isfile(weights.path):
            if offline():
                raise OSError('HF_HUB_OFFLINE is set')
            import urllib.request
            import torch
            from torch.hub import HASH_REGEX
            urllib.request.urlopen(urllib.request.Request(weights.url, method='HEAD'), timeout=30).close()
            prefix = HASH_REGEX.search(weights.filename)
            os.makedirs(weights.folder, exist_ok=True)  # only once the file is reachable
            torch.hub.download_url_to_file(weights.url, weights.path, prefix.group(1) if prefix else None)
        return weights.path
    except OSError:  # no network, no such file on the hub: the same remedy
        raise config.UserError(
            f'{weights.name} weights not found: no {weights.filename} in {weights.folder}, and no download here; on '
            f'a machine with internet run {weights.fetch}, then copy the folder it fills to {weights.folder} here '
            f'(or start from a local file with --pretrained-path)') from None


def decide(plan):
    """What the weights a new run starts from decide, before anything is written: for --pretrained, the file found
    (or fetched) in its library's cache and recorded (library, name, file, SHA-256), the side, statistics and
    interpolation the weights were trained with; for --pretrained-path, what that checkpoint of this toolkit was
    trained with (its image size, and its statistics unless it used its data's own). {} when training from
    scratch. Keys: pretrained_weights, image_size, normalize, mean, std, interpolation (those that apply)."""
    if plan.pretrained.lower() != 'none' and plan.pretrained_path:
        raise config.UserError('give one of --pretrained and --pretrained-path, not both')
    weights = find(plan.model, plan.pretrained)
    if weights is not None:
        from utils.io import sha256
        path = ensure(weights)
        same = tuple(weights.mean) == config.IMAGENET_MEAN and tuple(weights.std) == config.IMAGENET_STD
        return {'pretrained_weights': {'library': weights.library, 'name': weights.name, 'file': path,
                                       'sha256': sha256(path)},
                'image_size': weights.image_size, 'normalize': 'imagenet' if same else 'weights',
                'mean': tuple(weights.mean), 'std': tuple(weights.std), 'interpolation': weights.interpolation}
    if plan.pretrained_path:
        from utils.io import stored_settings
        stored = stored_settings(plan.pretrained_path)
        # the published weights that checkpoint started from stay on record: the lineage of the weights
        out = {'image_size': int(stored.get('image_size', 0)), 'pretrained_weights': stored.get('pretrained_weights')}
        if stored.get('normalize') == 'dataset':
            return {**out, 'normalize': 'dataset'}  # the new data's own, as that run had its data's own
        mean, std = stored.get('mean', config.IMAGENET_MEAN), stored.get('std', config.IMAGENET_STD)
        return {**out, 'normalize': stored.get('normalize', 'imagenet'), 'mean': tuple(mean), 'std': tuple(std),
                'interpolation': stored.get('interpolation', 'bilinear')}
    return {}


def load_into(model, weights):
    """Load a torch hub weights file (torchvision, resnest) into `model`; timm files are loaded by timm itself
    when the model is created."""
    from utils.io import load_checkpoint
    return model.load_weights(load_checkpoint(ensure(weights)), weights.name)
