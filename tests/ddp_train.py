"""Run under torchrun by test_distributed.py: a short DDP training through engine.fit, then each rank
writes its final weights and the labels it trained on to OUT/rank<R>.pt.

    torchrun --standalone --nproc_per_node=2 tests/ddp_train.py TRAIN_ROOT CHECKPOINT_DIR OUT
"""
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import WeightedRandomSampler  # noqa: E402

import config  # noqa: E402
from data import samplers  # noqa: E402
from utils import engine  # noqa: E402


def balanced(targets, cfg, generator):
    """Each class drawn equally often: weight 1 / class size, with replacement."""
    counts = Counter(targets)
    return WeightedRandomSampler([1.0 / counts[t] for t in targets], len(targets), generator=generator)


def main(train_root, checkpoint_dir, out):
    # The registry's balancing sampler where the tree has one; otherwise the same idea built here.
    samplers.SAMPLERS.setdefault('imbalanced', balanced)
    seen = {'model': None, 'labels': []}

    def record(module, inputs, output):
        if isinstance(module, DistributedDataParallel):
            seen['model'] = module.module
        elif isinstance(module, torch.nn.CrossEntropyLoss) and torch.is_grad_enabled():
            seen['labels'] += inputs[1].tolist()

    torch.nn.modules.module.register_module_forward_hook(record)
    cfg = config.parse(train_data_root=train_root, checkpoint_dir=checkpoint_dir, run_name='ddp', model='ResNet34',
                       image_size=32, batch_size=6, max_epoch=2, num_workers=0, vis=False, sampler='imbalanced',
                       loss='ce', mixup_prob=0.0)  # plain labels reach the hooked CrossEntropyLoss
    engine.fit(cfg)
    rank = int(os.environ['RANK'])
    torch.save({'state': seen['model'].state_dict(), 'labels': seen['labels']}, os.path.join(out, f'rank{rank}.pt'))


if __name__ == '__main__':
    main(*sys.argv[1:4])
