"""Training on several processes with DistributedDataParallel, launched by torchrun.

    torchrun --standalone --nproc_per_node=2 main.py train ...                      # one machine
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \
             --rdzv-endpoint=HOST:29500 --rdzv-id=RUN main.py train --use-gpu ...   # on every machine

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op and training runs in
one process. Each rank reads its own share of every epoch (`ShardedSampler`), gradients are averaged by DDP,
epoch metrics are all-reduced, and only rank 0 prints, plots and writes files.
"""
import builtins
import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler, Subset


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def launched():
    """True inside a torchrun process group of more than one process."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def setup(cfg):
    """Join the process group torchrun describes (gloo on the CPU, nccl on CUDA, or cfg.dist_backend) and
    silence every rank but 0; returns the Context (rank 0 of 1 when not launched by torchrun)."""
    if not launched():
        return Context()
    if cfg.freeze_epochs:
        from config import UserError
        raise UserError('--freeze-epochs changes which parameters train during the run, which DistributedDataParallel '
                        'does not follow; fine-tune in one process (or keep the backbone frozen: --freeze-backbone)')
    ctx = Context(int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', 0)))
    cuda = cfg.use_gpu and torch.cuda.is_available()
    backend = cfg.dist_backend if cfg.dist_backend != 'auto' else ('nccl' if cuda else 'gloo')
    if cuda:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if not ctx.is_main:
        quiet()
    print(f'distributed: {ctx.world_size} processes ({backend}), {cfg.batch_size} images per process per step, '
          f'effective batch size {ctx.world_size * cfg.batch_size}')
    return ctx


def quiet():
    """Ranks other than 0 print nothing and show no progress bars (warnings and errors still reach stderr)."""
    import tqdm
    builtins.print = lambda *args, **kwargs: None
    tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)


def teardown(ctx):
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main_first(ctx, fn, *args):
    """fn(*args) on rank 0, then on the other ranks (e.g. writing the demo folder once)."""
    if ctx.enabled and not ctx.is_main:
        dist.barrier()
    out = fn(*args)
    if ctx.enabled and ctx.is_main:
        dist.barrier()
    return out


def broadcast(ctx, obj):
    """Rank 0's `obj` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def device(ctx, device):
    """cuda:LOCAL_RANK for a CUDA device under torchrun; `device` otherwise."""
    return torch.device('cuda', ctx.local_rank) if device.type == 'cuda' and ctx.enabled else device


def wrap(model, cfg, ctx, device):
    """DistributedDataParallel around `model` (converted to SyncBatchNorm first with cfg.sync_bn on CUDA)."""
    if not ctx.enabled:
        return model
    if cfg.sync_bn:
        if device.type == 'cuda':
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            print('note: --sync-bn needs CUDA; batch norm statistics stay per process on the CPU')
    ids = [device.index] if device.type == 'cuda' else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_buffers(model, ctx):
    """Rank 0's buffers (batch-norm running statistics) on every rank, so all ranks hold the same model."""
    if ctx.enabled:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def reduce_metrics(ctx, result, count_key='images'):
    """Epoch metrics over all ranks: means weighted by each rank's image count, counts summed."""
    if not ctx.enabled:
        return result
    n = result[count_key] if count_key in result else len(result['targets'])
    t = torch.tensor([result['loss'] * n, result['acc'] * n, float(n)], dtype=torch.float64)
    dist.all_reduce(t)
    out = dict(result, loss=t[0].item() / max(t[2].item(), 1), acc=t[1].item() / max(t[2].item(), 1))
    if count_key in result:
        out[count_key] = int(t[2].item())
    return out


def any_rank(ctx, flag):
    """`flag` on any rank, on every rank: a signal that reached one process stops all at the same step."""
    if not ctx.enabled:
        return bool(flag)
    t = torch.tensor([float(bool(flag))], device='cuda' if dist.get_backend() == 'nccl' else 'cpu')
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item() > 0


class ShardedSampler(Sampler):
    """Any sampler's index stream split across ranks: every rank draws the same full stream (shared seed per
    epoch), pads it to a multiple of world_size by repeating its start, and keeps every world_size-th index
    from its rank. So shuffling, weighting and class balancing hold over the union of ranks, and every rank
    takes the same number of steps (DDP needs that).

    The seed for an epoch comes from `generator` (reseeded by the training loop each epoch, identically on all
    ranks); the inner sampler's own generator and the global torch RNG are seeded from it while it draws, so
    samplers that use either one agree across ranks.
    """

    def __init__(self, sampler, rank, world_size, generator=None, seed=0):
        self.sampler, self.rank, self.world_size = sampler, rank, world_size
        self.generator, self.seed = generator, seed

    def __len__(self):
        return -(-len(self.sampler) // self.world_size)

    def _epoch_seed(self):
        seed = self.seed
        if self.generator is not None:
            seed += int(torch.randint(2 ** 62, (), generator=self.generator))
        return seed

    def __iter__(self):
        seed = self._epoch_seed()
        inner = getattr(self.sampler, 'generator', None)
        if isinstance(inner, torch.Generator):
            inner.manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            indices = list(self.sampler)
        total = len(self) * self.world_size
        if indices:
            indices += (indices * (total // len(indices) + 1))[:total - len(indices)]
        return iter(indices[self.rank:total:self.world_size])


def shard_sampler(sampler, ctx, generator=None, seed=0):
    return ShardedSampler(sampler, ctx.rank, ctx.world_size, generator, seed) if ctx.enabled else sampler


def shard_dataset(dataset, ctx):
    """Every world_size-th item from this rank's offset, unpadded (for evaluation, where counts are summed)."""
    if not ctx.enabled:
        return dataset
    return Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
