"""The sampler registry: how training batches are drawn. Each builder takes (targets, cfg, generator)."""
import torch
from torch.utils.data import RandomSampler, WeightedRandomSampler


def shuffle(targets, cfg, generator):
    return RandomSampler(range(len(targets)), generator=generator)


def inverse_count_weights(targets):
    """Per-image weight 1 / (images of its class): every class is drawn equally often on average."""
    labels = torch.as_tensor(targets, dtype=torch.long)
    counts = torch.bincount(labels).double()
    return 1.0 / counts[labels]


def weighted(targets, cfg, generator):
    # As many draws per epoch as images, with replacement, so an epoch keeps its length.
    return WeightedRandomSampler(inverse_count_weights(targets), len(targets), replacement=True, generator=generator)


def imbalanced(targets, cfg, generator):
    # Labels given explicitly: torchsampler's own label discovery is wrong for DatasetFolder and Subset.
    # It draws from torch's global generator, which training seeds every epoch.
    from torchsampler import ImbalancedDatasetSampler
    return ImbalancedDatasetSampler(list(targets), labels=list(targets))


SAMPLERS = {'shuffle': shuffle, 'weighted': weighted, 'imbalanced': imbalanced}


def build_sampler(targets, cfg, generator):
    return SAMPLERS[cfg.sampler](targets, cfg, generator)
