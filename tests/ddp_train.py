"""Run under torchrun by test_distributed.py: a short DDP training through engine.fit, then each rank
writes its final weights and the training-set indices it drew in each epoch to OUT/rank<R>.pt.

    torchrun --standalone --nproc_per_node=2 tests/ddp_train.py TRAIN_ROOT CHECKPOINT_DIR OUT
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import Sampler  # noqa: E402

import config  # noqa: E402
from utils.train import distributed
from utils.train import engine  # noqa: E402


class Recorded(Sampler):
    """The sampler training uses on this rank, unchanged, keeping the indices of every epoch it yields."""

    def __init__(self, sampler, epochs):
        self.sampler, self.epochs = sampler, epochs

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        self.epochs.append(list(self.sampler))
        return iter(self.epochs[-1])


def main(train_root, checkpoint_dir, out):
    seen = {'model': None, 'epochs': []}

    def record(module, inputs, output):
        if isinstance(module, DistributedDataParallel):
            seen['model'] = module.module

    torch.nn.modules.module.register_module_forward_hook(record)
    shard = distributed.shard_sampler
    distributed.shard_sampler = lambda *args: Recorded(shard(*args), seen['epochs'])
    cfg = config.parse(train_data_root=train_root, checkpoint_dir=checkpoint_dir, run_name='ddp', model='ResNet34',
                       image_size=32, batch_size=6, max_epoch=2, num_workers=0, vis=False)
    engine.fit(cfg)
    rank = int(os.environ['RANK'])
    torch.save({'state': seen['model'].state_dict(), 'epochs': seen['epochs']}, os.path.join(out, f'rank{rank}.pt'))


if __name__ == '__main__':
    main(*sys.argv[1:4])
