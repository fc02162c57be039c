"""The sampler registry: how training batches are drawn. Each builder takes (targets, cfg, generator)."""
import torch
from torch.utils.data import RandomSampler


def shuffle(targets, cfg, generator):
    return RandomSampler(range(len(targets)), generator=generator)


SAMPLERS = {'shuffle': shuffle}


def build_sampler(targets, cfg, generator):
    name = cfg.sampler.lower()
    if name not in SAMPLERS:
        raise ValueError(f'unknown --sampler={cfg.sampler!r}; choose one of: {", ".join(SAMPLERS)}')
    return SAMPLERS[name](targets, cfg, generator)
