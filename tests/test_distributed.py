"""DDP through torchrun on the CPU (gloo), and the sampler sharding that keeps balancing across ranks."""
import os
import subprocess
import sys
from collections import Counter

import torch
from torch.utils.data import RandomSampler, WeightedRandomSampler

import config
from conftest import ROOT, write_class_folders
from data.samplers import build_sampler
from utils.train.distributed import ShardedSampler


def shards(make_sampler, world, seed=0):
    """Each rank's index list for one epoch, every rank with its own (identically seeded) sampler."""
    out = []
    for rank in range(world):
        g = torch.Generator().manual_seed(seed)
        out.append(list(ShardedSampler(make_sampler(g), rank, world, generator=g)))
    return out


def test_sharded_shuffle_gives_every_index_once_across_ranks_with_equal_lengths():
    parts = shards(lambda g: RandomSampler(range(100), generator=g), world=4)
    assert [len(p) for p in parts] == [25] * 4
    assert sorted(sum(parts, [])) == list(range(100))


def test_sharded_uneven_stream_pads_so_every_rank_takes_the_same_steps():
    parts = shards(lambda g: RandomSampler(range(7), generator=g), world=2)
    assert [len(p) for p in parts] == [4, 4] and set(sum(parts, [])) == set(range(7))


def test_sharded_weighted_sampler_keeps_classes_balanced_over_both_ranks():
    targets = [0] * 600 + [1] * 300 + [2] * 100
    counts = Counter(targets)
    weights = [1.0 / counts[t] for t in targets]
    parts = shards(lambda g: WeightedRandomSampler(weights, len(targets), generator=g), world=2)
    assert parts[0] != parts[1]
    per_class = Counter(targets[i] for i in sum(parts, []))
    assert sum(per_class.values()) == 1000
    assert all(abs(per_class[c] - 1000 / 3) < 60 for c in range(3)), per_class  # unweighted: 600 / 300 / 100


def test_sharded_imbalanced_sampler_draws_one_stream_across_ranks_whatever_their_global_rng():
    targets = [0] * 600 + [1] * 300 + [2] * 100
    cfg = config.parse(sampler='imbalanced')  # torchsampler's, which draws from torch's global generator

    def shard(rank, world):
        torch.manual_seed(100 + rank)  # each process's global generator is in its own state
        g = torch.Generator().manual_seed(0)
        return list(ShardedSampler(build_sampler(targets, cfg, g), rank, world, generator=g))

    whole = shard(0, 1)
    assert [i for pair in zip(shard(0, 2), shard(1, 2)) for i in pair] == whole  # the ranks interleave to it
    per_class = Counter(targets[i] for i in whole)
    assert all(abs(per_class[c] - 1000 / 3) < 60 for c in range(3)), per_class


def test_torchrun_two_cpu_ranks_train_identical_weights_on_disjoint_halves_one_checkpoint_one_log(tmp_path):
    train = tmp_path / 'train'
    for name, n in (('a', 24), ('b', 8), ('c', 4)):  # imbalanced 6 : 2 : 1
        write_class_folders(train, [name], n, seed=len(name) + n)
    out = tmp_path / 'out'
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          os.path.join(ROOT, 'tests', 'ddp_train.py'), str(train), str(tmp_path / 'ck'), str(out)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.count('effective batch size 12') == 1
    assert res.stdout.count('epoch 2/2:') == 1  # only rank 0 prints

    ranks = [torch.load(out / f'rank{r}.pt', weights_only=True) for r in (0, 1)]
    for key, value in ranks[0]['state'].items():
        assert torch.equal(value, ranks[1]['state'][key]), key
    assert os.listdir(tmp_path / 'ck') == ['ddp']
    run = tmp_path / 'ck' / 'ddp'
    assert sorted(os.listdir(run)) == ['best_model.pth', 'classes.json', 'config.json', 'curves.png', 'last.pth',
                                       'lr.csv', 'metrics.jsonl', 'report.html', 'report.json']
    assert len(open(run / 'metrics.jsonl').read().splitlines()) == 2  # one writer, one line per epoch
    saved = torch.load(run / 'last.pth', weights_only=True)['model']
    assert all(torch.equal(v, ranks[0]['state'][k]) for k, v in saved.items())

    # 36 images less 6 held out: in each epoch the ranks draw disjoint halves of the 30 training images
    first, second = ranks[0]['epochs'], ranks[1]['epochs']
    assert len(first) == len(second) == 2
    for mine, theirs in zip(first, second):
        assert len(mine) == len(theirs) == 15 and sorted(mine + theirs) == list(range(30))
    assert first[0] != first[1]  # reshuffled every epoch
