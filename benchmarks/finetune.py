"""Fine-tuning from one of the toolkit's own checkpoints against training from scratch, on the same budget.

    python benchmarks/finetune.py                                  # ResNet34 32 px, 3 epochs, seeds 0,1,2
    python benchmarks/finetune.py --model=SqueezeNet --epochs=10 --seeds=0

Source task: printed capital letters A-Z, rendered here from the TrueType fonts in --fonts (DejaVu: Debian's
fonts-dejavu-core) at random sizes, offsets and slants, 26 classes; a model is trained on them once
(--source-epochs). Target task: the bundled handwritten digits demo (1221 training images). Rows, each trained for
--epochs epochs with the toolkit's defaults and scored on the demo's validation split and untouched test split:
from scratch; fine-tuned from the letters checkpoint (--pretrained-path, head replaced); the same with
--freeze-epochs=1 (head only for the first epoch); and with --freeze-epochs=1 --backbone-lr-mult=0.1.
"""
import argparse
import glob
import os
import random
import statistics
import string
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')

ROWS = {'from scratch': None,
        'fine-tuned, all layers': {},
        'fine-tuned, --freeze-epochs=1': {'freeze_epochs': 1},
        'fine-tuned, --freeze-epochs=1 --backbone-lr-mult=0.1': {'freeze_epochs': 1, 'backbone_lr_mult': 0.1}}


def make_letters(out, fonts, per_class, seed=0, size=32):
    """out/<A..Z>/*.png: white letters on black (as the digits are), a random face, size, offset and slant each."""
    from PIL import Image, ImageDraw, ImageFont
    faces = sorted(glob.glob(os.path.join(fonts, '*.ttf')))
    if not faces:
        raise SystemExit(f'no .ttf fonts in {fonts}; install them (apt-get install fonts-dejavu-core) or give --fonts')
    rng = random.Random(seed)
    for letter in string.ascii_uppercase:
        os.makedirs(os.path.join(out, letter), exist_ok=True)
        for i in range(per_class):
            font = ImageFont.truetype(rng.choice(faces), rng.randint(20, 30))
            canvas = Image.new('L', (48, 48), 0)
            ImageDraw.Draw(canvas).text((24 + rng.randint(-3, 3), 24 + rng.randint(-3, 3)), letter,
                                        fill=rng.randint(170, 255), font=font, anchor='mm')
            canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR).crop((8, 8, 40, 40))
            canvas.resize((size, size), Image.BILINEAR).convert('RGB').save(os.path.join(out, letter, f'{i:03d}.png'))
    return out


def test_accuracy(run_dir, test_root):
    import torch
    import config
    from data import loaders
    from data.dataset import BadFileLog
    from utils.evaluate import loop
    model, cfg, ckpt, device = loop.load_for_eval(config.parse(load_path=os.path.join(run_dir, 'best_model.pth'),
                                                                 num_workers=0))
    dataset = loaders.eval_dataset(cfg, test_root, ckpt['classes'])
    result = loop.evaluate(model, loaders.eval_loader(dataset, cfg), torch.nn.CrossEntropyLoss(), device,
                             BadFileLog(), 'test')
    return ckpt['best_metric'], result['acc']


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--model', default='ResNet34')
    p.add_argument('--image-size', type=int, default=32)
    p.add_argument('--epochs', type=int, default=3, help='the budget of every target row')
    p.add_argument('--source-epochs', type=int, default=5)
    p.add_argument('--letters-per-class', type=int, default=60)
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--fonts', default='/usr/share/fonts/truetype/dejavu')
    p.add_argument('--threads', type=int, default=1, help='torch threads (1: steady on a shared machine)')
    p.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'out', 'finetune'))
    args = p.parse_args(argv)
    import torch
    import config
    from data.demo import ensure_demo
    from utils.train import engine
    torch.set_num_threads(args.threads)
    common = dict(model=args.model, image_size=args.image_size, num_workers=0, vis=False,
                  checkpoint_dir=os.path.join(args.out, 'runs'))
    letters = make_letters(os.path.join(args.out, 'letters'), args.fonts, args.letters_per_class)
    source = engine.fit(config.parse(train_data_root=letters, max_epoch=args.source_epochs, run_name='letters',
                                     **common))
    source_val = torch.load(os.path.join(source, 'best_model.pth'), weights_only=True)['best_metric']
    demo = os.path.abspath(ensure_demo(os.path.join(ROOT, 'data', 'demo')))
    results = {name: [] for name in ROWS}
    for seed in [int(s) for s in args.seeds.split(',')]:
        for i, (name, extra) in enumerate(ROWS.items()):
            settings = dict(train_data_root=os.path.join(demo, 'train'), val_data_root=os.path.join(demo, 'val'),
                            max_epoch=args.epochs, seed=seed, run_name=f'row{i}-seed{seed}', **common)
            if extra is not None:
                settings.update(pretrained_path=os.path.join(source, 'best_model.pth'), **extra)
            start = time.time()
            run = engine.fit(config.parse(**settings))
            results[name].append((*test_accuracy(run, os.path.join(demo, 'test')), time.time() - start))
    print(f'\nsource: {args.model} {args.image_size} px trained {args.source_epochs} epochs on '
          f'{26 * args.letters_per_class} rendered letters (validation accuracy {100 * source_val:.2f} %); '
          f'target: the digits demo, {args.epochs} epochs per row, seeds {args.seeds}, torch threads '
          f'{torch.get_num_threads()}, mean ± sd over the seeds\n')
    print('| start | val acc | test acc | seconds per run |\n|---|---|---|---|')
    for name, runs in results.items():
        cells = []
        for k, scale in ((0, 100), (1, 100), (2, 1)):
            values = [scale * r[k] for r in runs]
            sd = f' ± {statistics.stdev(values):.{2 if scale == 100 else 0}f}' if len(values) > 1 else ''
            cells.append(f'{statistics.fmean(values):.{2 if scale == 100 else 0}f}{sd}')
        print(f'| {name} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
