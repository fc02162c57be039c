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
    else:
        from torchvision.models import get_model_weights
        builder = TORCHVISION[name]
        weights = get_model_weights(builder).DEFAULT
        url, label, size = weights.url, f'{type(weights).__name__}.{weights.name}', weights.transforms().crop_size[0]
        fetch = f'python -c "import torchvision; torchvision.models.{builder}(weights=\'{weights.name}\')"'
    folder = os.path.join(torch.hub.get_dir(), 'checkpoints')
    return Weights('resnest' if name in RESNEST else 'torchvision', label, folder, os.path.basename(url), fetch,
                   size, url=url)


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
    size = cfg.input_size[-1]
    fetch = f'python -c "import timm; timm.create_model(\'{tagged}\', pretrained=True)"'
    if cfg.hf_hub_id:
        from huggingface_hub.file_download import repo_folder_name
        folder = os.path.join(constants.HF_HUB_CACHE, repo_folder_name(repo_id=cfg.hf_hub_id, repo_type='model'))
        return Weights('timm', 'timm/' + tagged, folder, cfg.hf_hub_filename or 'model.safetensors', fetch, size,
                       repo=cfg.hf_hub_id)
    folder = os.path.join(torch.hub.get_dir(), 'checkpoints')
    return Weights('timm', 'timm/' + tagged, folder, os.path.basename(cfg.url), fetch, size, url=cfg.url)


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


def prepare(cfg):
    """For a new training run, before anything is written: find (or fetch) the --pretrained file, record where it
    came from on cfg.pretrained_weights (library, name, file, SHA-256; config.json and the checkpoints keep it),
    and make image_size 0 the side the weights expect (a checkpoint of this toolkit: the side it was trained at)."""
    if cfg.pretrained.lower() != 'none' and cfg.pretrained_path:
        raise config.UserError('give one of --pretrained and --pretrained-path, not both')
    weights = find(cfg.model, cfg.pretrained)
    if weights is not None:
        from utils.io import sha256
        path = ensure(weights)
        cfg.pretrained_weights = {'library': weights.library, 'name': weights.name, 'file': path,
                                  'sha256': sha256(path)}
        cfg.image_size = cfg.image_size or weights.image_size
    elif cfg.pretrained_path and not cfg.image_size:
        from utils.io import stored_settings
        cfg.image_size = int(stored_settings(cfg.pretrained_path).get('image_size', 0))
    return cfg


def load_into(model, weights):
    """Load a torch hub weights file (torchvision, resnest) into `model`; timm files are loaded by timm itself
    when the model is created."""
    from utils.io import load_checkpoint
    return model.load_weights(load_checkpoint(ensure(weights)), weights.name)
