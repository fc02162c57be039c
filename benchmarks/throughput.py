"""How close to the limit the toolkit trains: throughput of each stage, in one process, on the demo data.

    python benchmarks/throughput.py --model=ResNet34 --image-size=64
    python benchmarks/throughput.py --model=SqueezeNet --image-size=32 --cache=ram
    python benchmarks/throughput.py --model=ResNet34 --image-size=64 --device=cuda --batch-size=256 --replicate=41

Prints, in images/s: (a) the limit -- full training steps on synthetic tensors already on the device;
(b) the data pipeline alone, with augmentation; (c) end-to-end training (utils/train/engine.train_one_epoch on the
demo's training images); the pipeline efficiency (c)/(a); inference without and with TTA; a naive baseline
(torchvision ImageFolder + DataLoader + the same model, written as a tutorial writes it) and our ratio to it;
time to the first batch; peak memory (RSS of this process and of its loader workers; CUDA peak allocation);
and the resident memory after each of several streaming passes over the data with the cache off (flat =
streaming). Settings other than the flags below are the toolkit's defaults (config.py), e.g. --amp=auto,
except attention: the model is the registered architecture unless --set attention=cbam|se is given.
Machines shared with other work give noisy figures: the limit is measured between the timed training
epochs, and the efficiency is the median of the per-epoch ratios to the neighbouring limits.
--replicate=K trains on the demo's training images listed K times (a manifest in a temporary folder; the naive
baseline reads the folder K times), so that an epoch is hundreds of steps, as on a real dataset.
"""
import argparse
import csv
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.chdir(ROOT)

import torch  # noqa: E402

import config  # noqa: E402
import models  # noqa: E402
from data import loaders  # noqa: E402
from data.dataset import BadFileLog  # noqa: E402
from data.samplers import build_sampler  # noqa: E402
from data import cache  # noqa: E402
from utils.train import engine  # noqa: E402
from utils.train import precision as fast  # noqa: E402
from utils.train.plan import resolve  # noqa: E402
from utils.train.optim import Schedule, build_optimizer  # noqa: E402
from utils.evaluate.tta import TTAModel, build_tta  # noqa: E402


def median(xs):
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def rss_mb():
    """Resident memory of this process now, in MiB."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def peak_mb(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def limit(model, cfg, device, precision, steps, warmup, num_classes):
    """images/s of forward + loss + backward + optimizer step on one synthetic batch already on the device."""
    model.train()
    optimizer = build_optimizer(model, cfg)
    criterion = torch.nn.CrossEntropyLoss()
    images = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
    if cache.use_channels_last(cfg, device):
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (cfg.batch_size,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        with precision.autocast():
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        precision.step(loss, optimizer)
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def pipeline(loader, device, cfg, steps):
    """(images/s the loader delivers, finished on the device as training sees them; seconds to first batch)."""
    start = time.perf_counter()
    seen, first, it = 0, None, iter(loader)
    for i in range(steps):
        try:
            images, labels, _ = next(it)
        except StopIteration:
            it = iter(loader)
            images, labels, _ = next(it)
        images = cache.finish_batch(images, device, cfg, True)
        sync(device)
        if first is None:
            first = time.perf_counter() - start
            start, seen = time.perf_counter(), 0
            continue
        seen += len(labels)
    return seen / (time.perf_counter() - start), first


def end_to_end(model, limit_model, train_loader, cfg, device, precision, limit_precision, args, num_classes):
    """Real training (engine.train_one_epoch on the demo) interleaved with limit measurements on another copy
    of the model: one warm-up epoch (worker start, allocator, cudnn autotuning), then per timed epoch the
    ratio of its images/s to the mean of the limits measured just before and just after it, so that a
    machine whose load drifts still compares like with like. Returns (epoch img/s, limits, ratios, resident MiB after each epoch, accuracy)."""
    optimizer = build_optimizer(model, cfg)
    criterion = torch.nn.CrossEntropyLoss().to(device)
    cfg = dataclasses.replace(cfg, max_epoch=args.epochs + 1)
    speeds, limits, ratios, rss = [], [], [], []
    for epoch in range(args.epochs + 1):
        sync(device)
        row = engine.train_one_epoch(model, train_loader, criterion, optimizer, Schedule(None, 'none'), device,
                                     epoch, cfg, _NoVis(), BadFileLog(), precision)
        rss.append(round(rss_mb()))
        if epoch == 0 or not limits:
            limits.append(limit(limit_model, cfg, device, limit_precision, args.steps, args.warmup, num_classes))
        if epoch:
            speeds.append(row['images'] / row['seconds'])
            limits.append(limit(limit_model, cfg, device, limit_precision, args.steps, args.warmup, num_classes))
            ratios.append(speeds[-1] / ((limits[-2] + limits[-1]) / 2))
    return speeds, limits, ratios, rss, row['acc']


class _NoVis:
    """Stands in for the dashboard: every drawing call does nothing."""
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@torch.no_grad()
def inference(model, loader, device, cfg, tta):
    """images/s of predicting every image of `loader` (probabilities), with the TTA `tta` or none."""
    wrapped = TTAModel(model, build_tta(tta, cfg.image_size)).eval()
    seen, start = 0, time.perf_counter()
    for images, labels, _ in loader:
        wrapped(cache.finish_batch(images, device, cfg, False)).cpu()
        seen += len(labels)
    sync(device)
    return seen / (time.perf_counter() - start)


def naive_setup(cfg, device, workers, replicate=1, attention='none'):
    """The tutorial way: torchvision ImageFolder (read `replicate` times) + DataLoader(shuffle=True, num_workers)
    + the model, fp32, Adam, cross-entropy, pad-and-crop; returns (loader, model, optimizer, criterion)."""
    from torchvision import datasets, transforms as T
    from data.transforms import IMAGENET_MEAN, IMAGENET_STD
    size = cfg.image_size
    transform = T.Compose([T.Resize((size, size)), T.RandomCrop(size, padding=max(1, size // 8), padding_mode='edge'),
                           T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    folder = datasets.ImageFolder(cfg.train_data_root, transform=transform)
    dataset = torch.utils.data.ConcatDataset([folder] * replicate)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers)
    net = models.build(cfg.model, len(folder.classes), attention=attention).to(device)
    return loader, net, torch.optim.Adam(net.parameters(), lr=cfg.lr), torch.nn.CrossEntropyLoss()


def naive_epoch(loader, net, optimizer, criterion, device):
    """One epoch of the tutorial loop (it reads the loss every step, as tutorials print it); returns images."""
    net.train()
    n = 0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        loss.item()
        n += len(labels)
    return n


def naive(cfg, device, epochs, workers, replicate=1, attention='none'):
    """images/s of the naive baseline over `epochs` epochs after one warm-up epoch."""
    setup = naive_setup(cfg, device, workers, replicate, attention)
    seen, seconds = 0, 0.0
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        n = naive_epoch(*setup, device)
        sync(device)
        if epoch:
            seen, seconds = seen + n, seconds + time.perf_counter() - start
    return seen / seconds


def replicated_manifest(cfg, k, folder):
    """A manifest in `folder` listing every training image of cfg's roots k times and the validation images
    once (split val): the data of a k times larger dataset, without copying a file."""
    classes, train, val = loaders.train_val_samples(cfg)
    path = os.path.join(folder, 'replicated.csv')
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['path', 'label', 'split'])
        w.writerows([os.path.abspath(p), classes[label], 'train'] for p, label in train * k)
        w.writerows([os.path.abspath(p), classes[label], 'val'] for p, label in val)
    return path


def streaming(cfg, device, model, passes):
    """Resident MiB after each inference pass over the training folder with the cache off: flat = streaming."""
    stream_cfg = dataclasses.replace(cfg, cache='none')
    dataset = loaders.eval_dataset(stream_cfg, stream_cfg.train_data_root, None)
    loader = loaders.eval_loader(dataset, stream_cfg)
    model.eval()
    out = []
    with torch.no_grad():
        for _ in range(passes):
            for images, _, _ in loader:
                model(cache.finish_batch(images, device, stream_cfg, False))
            out.append(round(rss_mb()))
    return out


def parser(doc):
    """The arguments every training benchmark takes: model, image size, batch size, device."""
    p = argparse.ArgumentParser(description=doc.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--model', default='ResNet34')
    p.add_argument('--image-size', type=int, default=64)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--device', default='cpu', help='cpu | cuda')
    return p


def print_result(result, path):
    """The RESULT line that scripts read, and the same as a JSON file at `path` when given."""
    print('RESULT ' + json.dumps(result))
    if path:
        with open(path, 'w') as f:
            json.dump(result, f, indent=1)


def main(argv=None):
    p = parser(__doc__)
    p.add_argument('--steps', type=int, default=10, help='timed steps for the limit and the pipeline')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--epochs', type=int, default=3, help='timed epochs of end-to-end and naive training '
                                                         '(after one warm-up epoch each)')
    p.add_argument('--cache', default=config.DefaultConfig().cache, help='auto | none | ram | gpu (default: the '
                                                                          'toolkit\'s default)')
    p.add_argument('--replicate', type=int, default=1, help='list the training images K times (K x 1221 on the '
                                                            'demo: 41 gives 50 061)')
    p.add_argument('--num-workers', type=int, default=-1, help='-1 = the toolkit\'s auto choice')
    p.add_argument('--naive-workers', type=int, default=2,
                   help='workers of the naive baseline (2, as in the PyTorch CIFAR-10 tutorial)')
    p.add_argument('--tta', default='hflip', help='TTA for the inference figure (utils/evaluate/tta.py names)')
    p.add_argument('--passes', type=int, default=3, help='streaming passes for the memory check (0 = skip)')
    p.add_argument('--naive-epochs', type=int, default=2, help='timed epochs of the naive baseline (0 = skip it)')
    p.add_argument('--set', nargs='*', default=[], metavar='NAME=VALUE',
                   help='any other toolkit setting, e.g. --set amp=fp16 compile=true')
    p.add_argument('--json', default='', help='also write the figures to this file')
    args = p.parse_args(argv)

    extra = dict(kv.split('=', 1) for kv in args.set)
    asked = config.parse(model=args.model, image_size=args.image_size, batch_size=args.batch_size, cache=args.cache,
                         num_workers=args.num_workers, use_gpu=args.device == 'cuda', vis=False, max_epoch=1,
                         **extra)
    scratch = tempfile.TemporaryDirectory(prefix='throughput-')
    if args.replicate > 1:
        manifest = replicated_manifest(loaders.resolve_roots(asked), args.replicate, scratch.name)
        asked = dataclasses.replace(asked, manifest=manifest, given=asked.given | {'manifest'})
    engine.set_seed(asked.seed)
    t0 = time.perf_counter()
    cfg, (train, val) = resolve(asked)  # the run's plan: what train would decide
    device = torch.device(cfg.device)
    if args.device == 'cuda' and device.type != 'cuda':
        raise SystemExit('--device=cuda asked for but CUDA is not available')
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    train_set, val_set = loaders.datasets(cfg, train, val)
    build_s = time.perf_counter() - t0
    workers = loaders.num_workers(cfg)
    print(f'{cfg.model} at {cfg.image_size} px, batch {cfg.batch_size}, {device}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, cache={cfg.cache}, {workers} loader workers, '
          f'{len(train_set)} training images ({args.replicate}x the demo\'s), {len(train_set) // cfg.batch_size} '
          f'steps per epoch')
    classes = train_set.classes
    attention = cfg.attention if 'attention' in asked.given else 'none'  # the architecture as registered
    model = models.build(cfg.model, len(classes), attention=attention).to(device)
    net, precision = fast.setup(model, cfg, device)
    print(f'precision: {precision}; channels_last: {cache.use_channels_last(cfg, device)}; compile: {cfg.compile}; '
          f'datasets built in {build_s:.1f}s ({len(train_set)} train, {len(val_set)} val images)')
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = loaders.train_loader(train_set, cfg, build_sampler(train_set.targets, cfg, generator), generator)

    r = {'model': cfg.model, 'image_size': cfg.image_size, 'batch_size': cfg.batch_size, 'device': str(device),
         'cache': cfg.cache, 'workers': workers, 'threads': torch.get_num_threads(), 'replicate': args.replicate,
         'train_images': len(train_set), 'compile': cfg.compile, 'compile_mode': cfg.compile_mode}
    r['pipeline'], r['first_batch_s'] = pipeline(train_loader, device, cfg, args.steps + 1)
    r['first_batch_s'] += build_s
    print(f'(b) data pipeline alone, with augmentation: {r["pipeline"]:.1f} img/s')
    model = models.build(cfg.model, len(classes), attention=attention).to(device)  # fresh weights: a real run
    train_net, train_precision = fast.setup(model, cfg, device)
    speeds, limits, ratios, r['train_rss_mb'], acc = end_to_end(train_net, net, train_loader, cfg, device, train_precision, precision,
                                             args, len(classes))
    r['limit'], r['end_to_end'] = median(limits), median(speeds)
    r['limits'], r['end_to_end_epochs'] = [round(x, 1) for x in limits], [round(x, 1) for x in speeds]
    r['efficiency'], r['efficiencies'] = median(ratios), [round(x, 3) for x in ratios]
    print(f'(a) limit, synthetic batches on the device: {r["limit"]:.1f} img/s (median of {r["limits"]})')
    print(f'(c) end to end, engine.train_one_epoch on the demo: {r["end_to_end"]:.1f} img/s '
          f'(median of {r["end_to_end_epochs"]}; train accuracy of the last epoch {acc:.3f})')
    print(f'resident MiB after each training epoch (cache={cfg.cache}): {r["train_rss_mb"]}')
    print(f'pipeline efficiency (c)/(a): {r["efficiency"]:.3f} (median of the per-epoch ratios {r["efficiencies"]})')

    val_loader = loaders.eval_loader(val_set, cfg)
    inference(model, val_loader, device, cfg, 'none')  # warm-up
    r['inference'] = inference(model, val_loader, device, cfg, 'none')
    r['inference_tta'] = inference(model, val_loader, device, cfg, args.tta)
    r['tta'] = args.tta
    print(f'inference: {r["inference"]:.1f} img/s; with TTA {args.tta}: {r["inference_tta"]:.1f} img/s')

    if args.naive_epochs:
        r['naive'] = naive(cfg, device, args.naive_epochs, args.naive_workers, args.replicate, attention)
        r['ratio_to_naive'] = r['end_to_end'] / r['naive']
        print(f'naive baseline (ImageFolder + DataLoader, {args.naive_workers} workers): {r["naive"]:.1f} img/s; '
              f'end to end / naive: {r["ratio_to_naive"]:.2f}x')
    del train_loader, val_loader  # let persistent workers exit, so their peak is counted
    r['peak_rss_mb'] = round(peak_mb())
    r['peak_rss_workers_mb'] = round(peak_mb(resource.RUSAGE_CHILDREN))
    if device.type == 'cuda':
        r['cuda_peak_mb'] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
    if args.passes:
        r['streaming_rss_mb'] = streaming(cfg, device, model, args.passes)
        print(f'streaming, cache off: resident MiB after each of {args.passes} passes over the training folder: '
              f'{r["streaming_rss_mb"]}')
    print(f'time to first batch: {r["first_batch_s"]:.2f}s (dataset build {build_s:.2f}s included); peak RSS: '
          f'{r["peak_rss_mb"]} MiB (workers {r["peak_rss_workers_mb"]} MiB)'
          + (f'; CUDA peak allocated {r["cuda_peak_mb"]} MiB' if 'cuda_peak_mb' in r else ''))
    print_result({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}, None)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(r, f, indent=1)
    return r


if __name__ == '__main__':
    main()
