"""Time to accuracy: seconds from starting `python main.py train` (the defaults, on the bundled demo) to the end
of the first epoch whose validation accuracy reaches the target, beside a naive baseline on the same data.

    python benchmarks/time_to_accuracy.py                                   # CPU: the defaults, then naive
    python benchmarks/time_to_accuracy.py --device=cuda
    python benchmarks/time_to_accuracy.py --runs=defaults,cache-none,naive --seeds=0,1,2 --json=out.json

Every run is a fresh process timed from its start -- imports, the demo, the datasets and the model included --
to the printed line of the first epoch at >= --target validation accuracy; the process is then stopped. Runs:
  defaults     python main.py train (plus --use-gpu on CUDA), checkpoints in a temporary folder, the dashboard
               pointed at a free port (recorded in the run folder, as when no server answers)
  cache-none   the same with --cache=none (the per-image PIL pipeline, the default before cache=auto)
  naive        the tutorial loop of benchmarks/throughput.py (ImageFolder + DataLoader(shuffle=True,
               num_workers=2), the registered architecture without attention, Adam, cross-entropy, pad-and-crop,
               ImageNet normalisation, fp32), validated after every epoch on the same validation folder
Each run has max_epoch epochs (the toolkit's default, 15) to get there. With several --seeds the runs take
turns (every run once per seed) and each gets the median over the seeds that reached the target. The load
average of the machine is printed with the figures: on a shared machine, compare runs of one invocation.
"""
import argparse
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCH = re.compile(r'^epoch (\d+)/(\d+): .*?\| val loss [\d.naninf]+ acc ([\d.]+)')


def commands(device, folder, max_epoch):
    sys.path.insert(0, ROOT)
    from utils.dashboard.server import free_port
    gpu = ['--use-gpu'] if device == 'cuda' else []
    # a port where no dashboard answers: the run records its windows in its folder, as without a server, and
    # never draws into a dashboard someone else has open
    train = [sys.executable, os.path.join(ROOT, 'main.py'), 'train', f'--checkpoint-dir={folder}',
             f'--max-epoch={max_epoch}', f'--vis-port={free_port()}'] + gpu
    return {'defaults': train, 'cache-none': train + ['--cache=none'],
            'naive': [sys.executable, os.path.abspath(__file__), '--naive-run', f'--device={device}',
                      f'--max-epoch={max_epoch}']}  # each gets --seed=N


def timed(command, target, log_path):
    """Run `command` from ROOT until a printed epoch reaches `target` validation accuracy (then stop it) or it
    ends; returns {seconds, epoch, val_acc, best_val_acc, epochs_seen, seconds_run}, seconds None when never
    reached."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', TQDM_DISABLE='1')
    start = time.perf_counter()
    out = {'seconds': None, 'epoch': None, 'val_acc': None, 'best_val_acc': 0.0, 'epochs_seen': 0}
    with open(log_path, 'w', buffering=1) as log:  # line by line: a stopped run keeps its log
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        for line in proc.stdout:
            log.write(line)
            match = EPOCH.match(line)
            if not match:
                continue
            epoch, acc = int(match.group(1)), float(match.group(3))
            out['epochs_seen'], out['best_val_acc'] = epoch, max(out['best_val_acc'], acc)
            if acc >= target:
                out.update(seconds=round(time.perf_counter() - start, 1), epoch=epoch, val_acc=acc)
                proc.terminate()
                break
        proc.wait()
    out['seconds_run'] = round(time.perf_counter() - start, 1)
    if out['seconds'] is None and proc.returncode:
        raise SystemExit(f'{" ".join(command)} failed (exit {proc.returncode}); see {log_path}')
    return out


def naive_run(device_name, max_epoch, seed):
    """The naive baseline as its own process: train, validate and print an epoch line like main.py's."""
    sys.path.insert(0, ROOT)
    os.chdir(ROOT)
    import torch
    torch.manual_seed(seed)
    from torchvision import datasets, transforms as T

    import config
    from benchmarks.throughput import naive_epoch, naive_setup
    from data import loaders
    from data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from data.dataset import auto_image_size
    cfg = loaders.resolve_roots(config.parse(use_gpu=device_name == 'cuda', vis=False))
    _, train, _ = loaders.train_val_samples(cfg)
    cfg = dataclasses.replace(cfg, image_size=auto_image_size(train, seed=cfg.seed))  # train's own rule
    device = config.select_device(cfg)
    setup = naive_setup(cfg, device, workers=2)
    net = setup[1]
    val = datasets.ImageFolder(cfg.val_data_root, T.Compose([T.Resize((cfg.image_size, cfg.image_size)), T.ToTensor(),
                                                             T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
    val_loader = torch.utils.data.DataLoader(val, batch_size=cfg.batch_size, num_workers=2)
    for epoch in range(max_epoch):
        naive_epoch(*setup, device)
        net.eval()
        correct = loss = 0.0
        with torch.no_grad():
            for inputs, labels in val_loader:
                inputs, labels = inputs.to(device), labels.to(device)
                output = net(inputs)
                loss += torch.nn.functional.cross_entropy(output, labels, reduction='sum').item()
                correct += (output.argmax(1) == labels).sum().item()
        print(f'epoch {epoch + 1}/{max_epoch}: naive | val loss {loss / len(val):.4f} acc {correct / len(val):.4f}',
              flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--device', default='cpu', help='cpu | cuda')
    p.add_argument('--target', type=float, default=0.98, help='validation accuracy to reach')
    p.add_argument('--runs', default='defaults,naive', help='comma-separated: defaults, cache-none, naive')
    p.add_argument('--max-epoch', type=int, default=15, help='epochs each run has (the toolkit\'s default)')
    p.add_argument('--seeds', default='0', help='comma-separated seeds; every run once per seed')
    p.add_argument('--seed', type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument('--logs', default='', help='folder for the runs\' output (default: a temporary folder)')
    p.add_argument('--json', default='', help='also write the figures to this file')
    p.add_argument('--naive-run', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.naive_run:
        return naive_run(args.device, args.max_epoch, args.seed)
    scratch = tempfile.TemporaryDirectory(prefix='time-to-accuracy-')
    logs = args.logs or scratch.name
    os.makedirs(logs, exist_ok=True)
    runs = commands(args.device, os.path.join(scratch.name, 'checkpoints'), args.max_epoch)
    results = {'device': args.device, 'target': args.target, 'cpus': os.cpu_count(),
               'load_before': [round(x, 1) for x in os.getloadavg()]}
    names = [r.strip() for r in args.runs.split(',') if r.strip()]
    unknown = [n for n in names if n not in runs]
    if unknown:
        raise SystemExit(f'unknown run {unknown[0]!r}; choose from {", ".join(runs)}')
    seeds = [int(x) for x in args.seeds.split(',')]
    for seed in seeds:
        for name in names:
            r = timed(runs[name] + [f'--seed={seed}'], args.target, os.path.join(logs, f'{name}-seed{seed}.log'))
            r.update(seed=seed, load_after=[round(x, 1) for x in os.getloadavg()])
            results.setdefault(name, {'runs': []})['runs'].append(r)
            reached = (f'{r["seconds"]:.1f} s (epoch {r["epoch"]}, val acc {r["val_acc"]:.4f})' if r['seconds']
                       else f'not reached in {r["epochs_seen"]} epochs, {r["seconds_run"]:.1f} s (best val acc '
                            f'{r["best_val_acc"]:.4f})')
            print(f'{name:<11} seed {seed}: time to {args.target:.0%} validation: {reached}; load average after '
                  f'{r["load_after"]}', flush=True)
    for name in names:
        times = sorted(r['seconds'] for r in results[name]['runs'] if r['seconds'])
        results[name].update(reached=len(times), median_seconds=statistics.median(times) if times else None)
        print(f'{name:<11} reached {args.target:.0%} in {len(times)} of {len(seeds)} seeds'
              + (f'; median {results[name]["median_seconds"]:.1f} s' if times else ''))
    sys.path.insert(0, ROOT)
    from benchmarks.throughput import print_result
    print_result(results, args.json)
    return results


if __name__ == '__main__':
    main()
