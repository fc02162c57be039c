"""Inference speed four ways -- eager PyTorch, TorchScript, ONNX Runtime float32 and int8 -- on the graphs `export`
ships.

    python benchmarks/inference.py                                # CPU (and CUDA when available), the models below
    python benchmarks/inference.py --models=ResNet34:64 --runs=500 --threads=2

For each model and device: batch-1 latency (median and 95th percentile over --runs calls) and batch-64 throughput
(64 / the median time of --batches calls), each with its ratio to eager PyTorch. The three runtimes are called in
turn, call after call, so that a machine shared with other work slows them alike; the load average is printed
before and after. The model is the registered architecture as the defaults build it from scratch at that size
(attention and stem auto: ResNet34 with CBAM and its ImageNet stem, SqueezeNet's small stem at 32 px) with random
weights (speed does not depend on their values), 10 classes, wrapped as `export` ships it (normalisation and
softmax inside), exported by utils/evaluate/export.py: ONNX through the dynamo exporter, TorchScript traced and
frozen, int8 by `export --int8`'s quantizer (calibrated on 64 random images: the ranges do not change the speed).
Eager runs under torch.inference_mode(); ONNX Runtime gets as many threads as torch (--threads, default torch's).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import models  # noqa: E402
from data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from utils.evaluate import export  # noqa: E402
from utils.evaluate.exported import quiet  # noqa: E402


def runners(deployable, shape, folder, device, threads):
    """{runtime: (call(batch) -> probabilities, why it is missing or '')} for eager, TorchScript, ONNX Runtime float32
    and int8 (which take and give host arrays, also on CUDA)."""
    import onnxruntime
    example = torch.rand(2, *shape)
    onnx_path, ts_path = os.path.join(folder, 'm.onnx'), os.path.join(folder, 'm.torchscript')
    int8_path = os.path.join(folder, 'm.int8.onnx')
    export.to_onnx(deployable, example, onnx_path)
    export.to_torchscript(deployable, example, ts_path)
    export.to_int8(onnx_path, int8_path, [torch.rand(16, *shape).numpy() for _ in range(4)])
    eager = deployable.to(device)
    with quiet():
        script = torch.jit.load(ts_path, map_location=device)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    provider = 'CUDAExecutionProvider' if device.type == 'cuda' else 'CPUExecutionProvider'
    out = {'eager PyTorch': (eager, ''), 'TorchScript': (script, '')}
    for runtime, path in (('ONNX Runtime', onnx_path), ('ONNX Runtime int8', int8_path)):
        if provider in onnxruntime.get_available_providers():
            session = onnxruntime.InferenceSession(path, options, providers=[provider])
            out[runtime] = (lambda x, s=session: s.run(None, {'images': x.cpu().numpy()})[0], '')
        else:
            out[runtime] = (None, f'no {provider} in this onnxruntime (onnxruntime-gpu has it)')
    return out


def timed(call, x, device):
    start = time.perf_counter()
    call(x)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(calls, shape, device, runs, batches, warmup):
    """{runtime: (p50 s, p95 s, images/s)}: batch-1 calls and batch-64 calls, the runtimes interleaved."""
    one, many = torch.rand(1, *shape, device=device), torch.rand(64, *shape, device=device)
    lat = {name: [] for name in calls}
    big = {name: [] for name in calls}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for name, call in calls.items():
                t = timed(call, one, device)
                if i >= warmup:
                    lat[name].append(t)
        for i in range(1 + batches):
            for name, call in calls.items():
                t = timed(call, many, device)
                if i:
                    big[name].append(t)
    out = {}
    for name in calls:
        q = statistics.quantiles(lat[name], n=20)
        out[name] = (statistics.median(lat[name]), q[18], 64 / statistics.median(big[name]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--models', default='ResNet34:32,ResNet34:64,SqueezeNet:32', help='NAME:SIZE pairs, comma-separated')
    p.add_argument('--devices', default='auto', help='cpu, cuda, or auto (cpu, and cuda when available)')
    p.add_argument('--runs', type=int, default=300, help='timed batch-1 calls per runtime')
    p.add_argument('--batches', type=int, default=20, help='timed batch-64 calls per runtime')
    p.add_argument('--warmup', type=int, default=20)
    p.add_argument('--threads', type=int, default=0, help='CPU threads of torch and ONNX Runtime; 0 = torch\'s choice')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else []) if args.devices == 'auto' else \
        args.devices.split(',')
    import onnxruntime
    print(f'torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {threads} CPU threads of '
          f'{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}')
    rows = []
    for spec in args.models.split(','):
        name, size = spec.split(':')
        torch.manual_seed(0)
        shape = (3, int(size), int(size))
        attention = models.resolve_attention(name, 'auto', '', 'none')
        stem = models.resolve_stem(name, 'auto', int(size), '', 'none')
        deployable = export.Deployable(models.build(name, 10, attention=attention, stem=stem), IMAGENET_MEAN,
                                       IMAGENET_STD).eval()
        print(f'{name} {size} px: attention {attention}, stem {stem}')
        for device in map(torch.device, devices):
            with tempfile.TemporaryDirectory() as folder:
                available = runners(deployable.cpu(), shape, folder, device, threads)
                calls = {k: call for k, (call, _) in available.items() if call is not None}
                figures = measure(calls, shape, device, args.runs, args.batches, args.warmup)
            base = figures['eager PyTorch']
            for runtime, (_, missing) in available.items():
                if missing:
                    rows.append(f'| {name} {size} px | {device.type} | {runtime} | {missing} | | | | |')
                else:
                    p50, p95, rate = figures[runtime]
                    rows.append(f'| {name} {size} px | {device.type} | {runtime} | {1e3 * p50:.2f} ms | '
                                f'{1e3 * p95:.2f} ms | {base[0] / p50:.2f}x | {rate:,.0f} img/s | '
                                f'{rate / base[2]:.2f}x |')
                print(rows[-1], flush=True)
    print(f'load average after: {os.getloadavg()[0]:.2f}\n')
    print('| model | device | runtime | batch-1 p50 | batch-1 p95 | p50 vs eager | batch-64 | vs eager |')
    print('|---|---|---|---|---|---|---|---|')
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
