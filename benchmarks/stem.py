"""The ImageNet stem against the small-image stem (--stem, models/layers/stem.py), per registered model.

    python benchmarks/stem.py                                     # AlexNet, SqueezeNet, ResNet34, ResNeSt50
    python benchmarks/stem.py --models=ResNet101 --epochs=5
    python benchmarks/stem.py --pass-time --models=ResNet34,SqueezeNet --image-size=32   # seconds, no training

Each model is trained on the bundled digits demo (1221 training images, 10 classes) at --image-size px for
--epochs epochs with the toolkit's defaults, once with --stem=imagenet and once with --stem=small, and scored on the
demo's validation split (best epoch) and its untouched test split; seconds per epoch are the training passes'
mean as metrics.jsonl records them. Chance is 10 %.

--pass-time trains nothing: it times one forward and backward pass and an SGD step on 64 random images at
--image-size px per model and stem (the faster of two passes after a warm-up one), on the cores torch is given.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))


def pass_times(names, stems, size, batch=64):
    """Print seconds per forward + backward pass + SGD step of `batch` random images, per model and stem."""
    import time
    import torch
    import models
    print(f'| model | stem | seconds / {batch} images at {size} px |\n|---|---|---|')
    for name in names:
        for stem in stems:
            if stem == 'small' and not models.has_small_stem(name):
                continue
            torch.manual_seed(0)
            net = models.build(name, 10, stem=stem, image_size=size)
            step = torch.optim.SGD(net.parameters(), lr=0.01)
            x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
            seconds = []
            for _ in range(3):
                start = time.perf_counter()
                step.zero_grad()
                torch.nn.functional.cross_entropy(net(x), y).backward()
                step.step()
                seconds.append(time.perf_counter() - start)
            print(f'| {name} | {stem} | {min(seconds[1:]):.2f} |', flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--models', default='AlexNet,SqueezeNet,ResNet34,ResNeSt50')
    p.add_argument('--stems', default='imagenet,small')
    p.add_argument('--image-size', type=int, default=32)
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'out', 'stem'))
    p.add_argument('--pass-time', action='store_true', help='time a training step per model and stem instead')
    args = p.parse_args(argv)
    if args.pass_time:
        return pass_times(args.models.split(','), args.stems.split(','), args.image_size)
    import torch
    import config
    from data.demo import ensure_demo
    from finetune import test_accuracy
    from utils.train import engine
    demo = os.path.abspath(ensure_demo(os.path.join(ROOT, 'data', 'demo')))
    rows = []
    for model in args.models.split(','):
        for stem in args.stems.split(','):
            run = engine.fit(config.parse(
                model=model, stem=stem, image_size=args.image_size, max_epoch=args.epochs, seed=args.seed,
                train_data_root=os.path.join(demo, 'train'), val_data_root=os.path.join(demo, 'val'), vis=False,
                html_report=False, checkpoint_dir=os.path.join(args.out, 'runs'),
                run_name=f'{model}-{stem}-{args.image_size}px-{args.epochs}ep-seed{args.seed}'))
            epochs = [json.loads(line) for line in open(os.path.join(run, 'metrics.jsonl'))]
            val, test = test_accuracy(run, os.path.join(demo, 'test'))
            rows.append((model, stem, val, test, sum(e['seconds'] for e in epochs) / len(epochs)))
            print(f'{model} {stem}: validation {100 * val:.2f} %, test {100 * test:.2f} %', flush=True)
    print(f'\ndigits demo, {args.image_size} px, {args.epochs} epochs, the defaults otherwise, seed {args.seed}, '
          f'torch threads {torch.get_num_threads()}\n')
    print('| model | stem | validation acc | test acc | seconds / epoch |\n|---|---|---|---|---|')
    for model, stem, val, test, seconds in rows:
        print(f'| {model} | {stem} | {100 * val:.2f} % | {100 * test:.2f} % | {seconds:.1f} |')


if __name__ == '__main__':
    main()
