"""What report.html costs a run: the wall time of the demo run (`python main.py train` with the defaults on the
bundled digits) and the seconds its end-of-train report took (report.json), then a screenshot of that report.

    python benchmarks/report_overhead.py --out docs/report.png
    python benchmarks/report_overhead.py --epochs 1     # a shorter run; the share for N epochs is then estimated
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint-dir', default=str(ROOT / 'benchmarks' / 'out'))
    parser.add_argument('--out', default='', help='PNG screenshot of the report (e.g. docs/report.png)')
    parser.add_argument('--height', type=int, default=1500, help='height of the screenshot, pixels')
    parser.add_argument('--epochs', type=int, default=0, help='--max-epoch of the run; 0 = the default (15)')
    args = parser.parse_args()
    name = f'report-demo-{time.strftime("%Y%m%d-%H%M%S")}'
    start = time.perf_counter()
    subprocess.run([sys.executable, 'main.py', 'train', f'--checkpoint-dir={args.checkpoint_dir}',
                    f'--run-name={name}'] + ([f'--max-epoch={args.epochs}'] if args.epochs else []),
                   cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    run_dir = Path(args.checkpoint_dir) / name
    report = json.loads((run_dir / 'report.json').read_text())
    load = os.getloadavg()[0]
    print(f'\n| demo run (`python main.py train`) | of which report.html | share |\n|---|---|---|\n'
          f'| {wall:.0f} s | {report["seconds"]:.1f} s | {100 * report["seconds"] / wall:.1f} % |\n'
          f'(run {run_dir}; {report["epochs"]} epochs of {report["model"]}, validation top-1 '
          f'{100 * report["val"]["top1"]:.2f} %; load average {load:.1f} on {os.cpu_count()} cores at the end)')
    if args.epochs:  # the report's cost does not grow with the epochs; an epoch's training pass does
        rows = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines() if line.strip()]
        per_epoch = sum(r['seconds'] for r in rows) / len(rows)  # training pass only: the estimate is a lower bound
        print(f'15 epochs at {per_epoch:.0f} s per training pass: at least {15 * per_epoch:.0f} s, of which the '
              f'report would be at most {100 * report["seconds"] / (15 * per_epoch + report["seconds"]):.1f} %')
    if args.out:
        from PIL import Image

        from utils.dashboard.server import screenshot
        png = screenshot((run_dir / 'report.html').as_uri(), args.out, window_size=(1300, args.height),
                         args=['--proxy-server=http://127.0.0.1:9', '--proxy-bypass-list=<-loopback>'])
        # a 256-colour palette keeps the picture small enough for the README
        Image.open(png).convert('RGB').quantize(256).save(png, optimize=True)
        print(f'screenshot: {png} ({png.stat().st_size // 1024} KiB)')


if __name__ == '__main__':
    main()
