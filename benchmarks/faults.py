"""Fault injection: kill -9 a small training at every kind of moment, resume it, and check that nothing is lost.

    python benchmarks/faults.py                  # SqueezeNet, 32 px, 3 epochs with --ema; a few minutes on 2 cores

Each kill point is its own trial: a fresh run is killed there (SIGKILL), every checkpoint left must load with
weights_only=True, then `train --resume=<run>/last.pth` finishes it, and the run must hold no temporary file,
one metrics.jsonl row per epoch, one lr.csv row per step, best checkpoints whose best_metric is the one in
last.pth, and final weights (and best checkpoints) equal to those of an uninterrupted run. The points cover
every kind of moment from the first last.pth on (before it there is nothing to resume: the run starts again).
Each kill also says what it lost: the steps the killed run had taken that its last.pth does not hold, which
resuming trains again. That is the epoch in progress, and the epoch before it too when the kill lands while that
epoch's last.pth is still being written (it is written while the next epoch trains); more than that is a failure.
It prints "faults survived: k / N" and the most a kill lost. Then SIGTERM (the scheduler's notice) at three
random steps of each epoch, a second SIGTERM during the save, a SIGKILL inside the save after a SIGTERM: each run
must exit 143 (-9 for the kill) with no step lost and resume to the uninterrupted run ("signals survived: k / N").
Then: two runs started in the same second, a read-only and
a full
--checkpoint-dir (tmpfs mounts: run as root), a disk that fills up mid-run, and the dashboard server killed
mid-run.

How a kill lands on an exact write: each training is `main.main(['train', ...])` in a process forked from a
server that imported the toolkit once (multiprocessing's forkserver: no 8 s of imports per run on 2 busy
cores). Before it starts, the process installs an audit hook (sys.addaudithook, a feature of Python; the
toolkit itself has no test hook) that sees the run's appends to lr.csv and metrics.jsonl, the creation of each
temporary checkpoint (.tmp-*.pth) and its rename, counts them, and SIGKILLs its own process at the chosen one
('during': a thread kills once the temporary file has bytes in it, i.e. inside the checkpoint write; if the
write ends first, the kill lands at its rename and the trial says so). A write is named by its kind and
ordinal ('tmp-3': the third temporary checkpoint), not by its place in the whole sequence: the checkpoints are
written on a background thread while the next epoch's steps append to lr.csv, and how the two interleave
differs from run to run.
"""
import argparse
import glob
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tests'))

PRELOAD = ['torch', 'torchvision', 'timm', 'timm.utils', 'visdom', 'main', 'utils.train.engine']
os.environ.setdefault('HF_HUB_OFFLINE', '1')
_context = None


def kind(what):
    """The kind of a recorded write: 'save' for any rename of a temporary file, else the write itself ('lr.csv',
    'metrics.jsonl', 'tmp'). Writes of one kind come from one thread in a fixed order (the checkpoints' from the
    background writer, the rows from the training loop), so `kind-n` names the same write in every run."""
    return 'save' if what.startswith('save ') else what


def install_kill_hook(at, mode='before', log=None):
    """Audit hook of the training process: record the run's writes (appends to lr.csv / metrics.jsonl, creation of
    a temporary checkpoint, rename of any temporary file), name each in the file `log`, and SIGKILL this process at
    the write `at` = 'KIND-N', the N-th write of that kind (see `kind`; '' never) -- before it happens, or with
    mode 'during' once its temporary checkpoint has bytes in it. The modes 'term*' send SIGTERM there instead (the
    scheduler's notice: the run writes last.pth at that step and exits 143); 'term-twice' a second SIGTERM once the
    next temporary checkpoint is created, 'term-kill' then a SIGKILL inside that write."""
    log = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if log else None  # os.write: not audited
    target, _, nth = at.rpartition('-') if at else ('', '', '0')
    counts, armed = {}, False

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def watch(path):
        while True:
            try:
                if os.path.getsize(path) > 0:
                    die()
            except OSError:
                pass
            time.sleep(0.0002)

    def label(event, args):
        if event == 'open' and isinstance(args[0], str):
            name = os.path.basename(args[0])
            if name in ('lr.csv', 'metrics.jsonl') and args[1] == 'a':
                return name
            if name.startswith('.tmp-') and name.endswith('.pth'):
                return 'tmp'
        if event == 'os.rename' and os.path.basename(str(args[0])).startswith('.tmp-'):
            return 'save ' + os.path.basename(str(args[1]))
        return None

    def hook(event, args):
        nonlocal armed
        what = label(event, args)
        if what is None:
            return
        counts[kind(what)] = counts.get(kind(what), 0) + 1
        if log is not None:
            os.write(log, (what + '\n').encode())
        if armed == 'term' and what == 'tmp':  # the signal's own save (or the finished epoch's) has begun
            armed = False
            if mode == 'term-twice':
                os.kill(os.getpid(), signal.SIGTERM)
            else:  # term-kill
                threading.Thread(target=watch, args=(args[0],), daemon=True).start()
        if armed is True and kind(what) == 'save':  # 'during' whose write ended first: the kill lands at its rename
            die()
        if kind(what) == target and counts[target] == int(nth):
            if mode.startswith('term'):
                os.kill(os.getpid(), signal.SIGTERM)
                armed = 'term' if mode != 'term' else False
            elif mode == 'during':
                armed = True
                threading.Thread(target=watch, args=(args[0],), daemon=True).start()
            else:
                die()

    sys.addaudithook(hook)


def _child(argv, cwd, at, mode, log, out, err):
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY), fd)
    os.chdir(cwd)
    import tqdm
    tqdm.tqdm.set_lock(threading.RLock())  # not tqdm's default multiprocessing lock, which a kill would leak
    install_kill_hook(at, mode, log)
    import main
    sys.exit(main.main(argv))


class Train:
    """`python main.py train ARGS` in a process forked from a server that imported the toolkit once; `at`
    ('KIND-N') kills it at that write (see install_kill_hook)."""

    def __init__(self, args, cwd, at='', mode='before', log=None):
        global _context
        if _context is None:
            _context = multiprocessing.get_context('forkserver')
            _context.set_forkserver_preload(PRELOAD)
        self.out, self.err = (tempfile.mkstemp(prefix='faults-', suffix=s) for s in ('.out', '.err'))
        self.args = ['train', *args]
        self.proc = _context.Process(target=_child, args=(self.args, str(cwd), at, mode, log, self.out[1],
                                                          self.err[1]))
        self.proc.start()

    def running(self):
        return self.proc.is_alive()

    def wait(self):
        """The finished run as a CompletedProcess (returncode -9 when killed)."""
        self.proc.join()
        texts = []
        for fd, path in (self.out, self.err):
            os.close(fd)
            texts.append(Path(path).read_text(errors='replace'))
            os.remove(path)
        return subprocess.CompletedProcess(self.args, self.proc.exitcode, *texts)


def train(args, cwd, at='', mode='before', log=None):
    """Run `train ARGS` to its end (or to the kill at write `at`); the CompletedProcess."""
    return Train(args, cwd, at, mode, log).wait()


def kill_points(events):
    """('KIND-N' write, mode, description) for every kind of moment in the recorded write sequence of a run, from
    its first last.pth on (a run killed before has nothing to resume: it starts again). The steps' lr.csv rows come
    from the training loop, an epoch's files from the background writer, in this order: last.pth (temporary, then
    its rename), its metrics.jsonl row, then the best checkpoints."""
    names, counts = [], {}
    for what in events:  # each write's 'KIND-N' name (see `kind`)
        counts[kind(what)] = counts.get(kind(what), 0) + 1
        names.append(f'{kind(what)}-{counts[kind(what)]}')
    rows = [i for i, what in enumerate(events) if what == 'lr.csv']
    epochs = events.count('save last.pth')
    steps = len(rows) // epochs
    points = []
    for epoch in range(1, epochs + 1):
        mine = rows[(epoch - 1) * steps:epoch * steps]
        if epoch > 1:
            points.append((mine[0], 'before', f'epoch {epoch}: first step'))
        mid = len(mine) // 2
        points.append((mine[mid], 'before', f'epoch {epoch}: mid-epoch, before step row {mid + 1}'))
    epoch, previous = 0, None
    for i, what in enumerate(events):
        if what == 'tmp':
            renamed = next(j for j in range(i + 1, len(events)) if events[j].startswith('save '))
            target = events[renamed][len('save '):]
            epoch += target == 'last.pth'
            moment = 'trained and validated' if target == 'last.pth' else f'after {previous}'
            points += [(i, 'before', f'epoch {epoch}: {moment}, before {target}'),
                       (i, 'during', f'epoch {epoch}: inside the write of {target}'),
                       (renamed, 'before', f'epoch {epoch}: {target} complete in its temporary, not renamed')]
        elif what == 'metrics.jsonl':
            points.append((i, 'before', f'epoch {epoch}: after last.pth, before its metrics row'))
        if what == 'metrics.jsonl' or what.startswith('save '):
            previous = 'its metrics row' if what == 'metrics.jsonl' else what[len('save '):]
    first = events.index('save last.pth')
    return [(names[i], mode, what) for i, mode, what in points if i > first]


def term_points(events, seed=0):
    """('lr.csv-N', mode, description) for SIGTERM at three random steps of each epoch (before the first last.pth
    too: a signal leaves one behind), a second SIGTERM during the save at one of them, and a SIGKILL inside the
    save at another."""
    import random
    steps = events.count('lr.csv') // events.count('save last.pth')
    rng, points = random.Random(seed), []
    for epoch in range(events.count('save last.pth')):
        for step in sorted(rng.sample(range(1, steps), min(3, steps - 1))):
            points.append((f'lr.csv-{epoch * steps + step}', 'term', f'SIGTERM in epoch {epoch + 1}, at step '
                                                                    f'{step} of {steps}'))
    points.append((f'lr.csv-{steps + steps // 2}', 'term-twice', f'SIGTERM in epoch 2 at step {steps // 2}, and '
                                                                 f'again during the save'))
    points.append((f'lr.csv-{steps + 1}', 'term-kill', 'SIGTERM in epoch 2 at step 1, then SIGKILL inside the save'))
    return points


def lost_steps(run_dir):
    """(steps the killed run had taken, steps its last.pth holds): what resuming it starts again."""
    path = os.path.join(run_dir, 'lr.csv')
    taken = sum(1 for line in open(path) if line.endswith('\n')) if os.path.isfile(path) else 0
    return taken, load(os.path.join(run_dir, 'last.pth'))['ema_step']


def load(path):
    import torch
    return torch.load(path, map_location='cpu', weights_only=True)


def same_tensors(a, b):
    import torch
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def checkpoints_load(run_dir):
    """Problems with the checkpoints a kill left (each must load with weights_only=True)."""
    problems = []
    for path in glob.glob(os.path.join(run_dir, '*.pth')):
        try:
            load(path)
        except Exception as e:  # noqa: BLE001 -- any failure to load is the finding
            problems.append(f'{os.path.basename(path)} does not load: {type(e).__name__}')
    return problems


def check_run(run_dir, ref_dir):
    """Problems of a finished run compared with the uninterrupted reference run (empty list: consistent)."""
    problems = checkpoints_load(run_dir)
    stray = [n for n in os.listdir(run_dir) if n.startswith('.tmp-') or n.endswith('.tmp')]
    if stray:
        problems.append(f'temporaries left: {stray}')

    def same(what, read, equal=lambda a, b: a == b):
        try:
            if not equal(read(run_dir), read(ref_dir)):
                problems.append(f'{what} differ from the uninterrupted run')
        except Exception as e:  # noqa: BLE001 -- a missing or unreadable file is a finding, not a crash
            problems.append(f'{what}: {type(e).__name__}: {e}')

    timing = ('seconds', 'images_per_s')
    same('metrics.jsonl rows', lambda d: [{k: v for k, v in json.loads(line).items() if k not in timing}
                                          for line in open(os.path.join(d, 'metrics.jsonl'))])
    same('lr.csv rows', lambda d: open(os.path.join(d, 'lr.csv')).read())
    for name, keys in (('last.pth', ('model', 'ema', 'best_metric', 'best_ema_metric')),
                       ('best_model.pth', ('model', 'best_metric')), ('best_model_ema.pth', ('model', 'best_metric'))):
        same(f'{name} weights and best_metric', lambda d: [load(os.path.join(d, name))[k] for k in keys],
             lambda a, b: all(same_tensors(x, y) if isinstance(x, dict) else x == y for x, y in zip(a, b)))
    try:  # and within the run: the best files hold the best metric that last.pth counts
        last = load(os.path.join(run_dir, 'last.pth'))
        for name, key in (('best_model.pth', 'best_metric'), ('best_model_ema.pth', 'best_ema_metric')):
            if load(os.path.join(run_dir, name))['best_metric'] != last[key]:
                problems.append(f'{name}: best_metric is not the {key} of last.pth')
    except Exception as e:  # noqa: BLE001
        problems.append(f'best_metric: {type(e).__name__}: {e}')
    return problems


def one_line_error(res, *texts, only=True):
    """Problems unless `res` failed with exit 2, no traceback, and a last stderr line containing every text (with
    `only`, the one line on stderr: the run stopped before its progress bars)."""
    lines = res.stderr.strip().splitlines()
    if (res.returncode == 2 and lines and all(t in lines[-1] for t in texts) and 'Traceback' not in res.stderr
            and (len(lines) == 1 or not only)):
        return []
    return [f'exit {res.returncode}, stderr: {" | ".join(lines[-3:])}']


def mount_tmpfs(folder, options):
    """Mount a tmpfs at `folder`; None when this machine does not allow it (not root, no mount)."""
    os.makedirs(folder, exist_ok=True)
    res = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(folder)], capture_output=True,
                         text=True)
    return None if res.returncode else folder


def report(name, problems):
    print(f'  {"ok  " if not problems else "FAIL"} {name}' + ''.join(f'\n         {p}' for p in problems), flush=True)
    return not problems


def extras(work, common, ref_dir):
    """The other faults: same-second start, read-only and full folders, disk full mid-run, dashboard killed."""
    from utils.dashboard.server import free_port
    from utils.dashboard.client import server_up
    results = []

    problems = ['the two runs never started in the same second (3 tries)']
    for attempt in range(3):
        folder = work / f'same-{attempt}'
        time.sleep(1 - time.time() % 1)  # both start at the top of a second
        procs = [Train([f'--checkpoint-dir={folder}', *common], work) for _ in range(2)]
        codes = [p.wait().returncode for p in procs]
        dirs = sorted(os.listdir(folder)) if folder.exists() else []
        if len(dirs) == 2 and dirs[1] != dirs[0] + '-2':
            continue  # different seconds: no collision to survive; try again
        problems = [f'exit codes {codes}'] if codes != [0, 0] else []
        problems += [] if len(dirs) == 2 else [f'run directories {dirs}']
        for d in dirs:
            problems += check_run(folder / d, ref_dir)
        name = f'two runs started in the same second -> {" and ".join(dirs)}'
        break
    else:
        name = 'two runs started in the same second'
    results.append(report(name, problems))

    ro = mount_tmpfs(work / 'readonly', 'ro,size=1m')
    if ro is None:
        print('  skip read-only --checkpoint-dir: mounting a tmpfs is not permitted here (run as root)')
    else:
        res = train([f'--checkpoint-dir={ro}', *common], work)
        subprocess.run(['umount', str(ro)])
        results.append(report('read-only --checkpoint-dir: one line before any work',
                              one_line_error(res, str(ro), 'cannot write') +
                              (['training started'] if 'plan:' in res.stdout else [])))

    small = mount_tmpfs(work / 'small', 'size=2m')
    if small is not None:
        res = train([f'--checkpoint-dir={small}', *common], work)
        left = os.listdir(small)
        subprocess.run(['umount', str(small)])
        results.append(report('2 MiB --checkpoint-dir: one line before any work, nothing written',
                              one_line_error(res, str(small), 'MiB free') + ([f'left {left}'] if left else [])))

    last_size = os.path.getsize(ref_dir / 'last.pth')
    full = mount_tmpfs(work / 'full', f'size={3 * last_size + 2 ** 20}')
    if full is not None:
        proc = Train([f'--checkpoint-dir={full}', '--run-name=r', *common], work)
        last = full / 'r' / 'last.pth'
        while not last.exists() and proc.running():
            time.sleep(0.01)
        with open(full / 'filler', 'wb') as f:  # another program fills the disk
            try:
                while True:
                    f.write(b'\0' * 65536)
                    f.flush()
            except OSError:
                pass
        res = proc.wait()
        problems = one_line_error(res, str(full / 'r'), 'MiB free in', only=False) + checkpoints_load(full / 'r')
        stray = [n for n in os.listdir(full / 'r') if n.startswith('.tmp-')]
        problems += [f'temporaries left: {stray}'] if stray else []
        os.remove(full / 'filler')
        res = train([f'--resume={last}'], work)
        problems += [f'resume after making room: exit {res.returncode}'] if res.returncode else check_run(full / 'r',
                                                                                                      ref_dir)
        subprocess.run(['umount', str(full)])
        results.append(report('disk full mid-run: one line, last.pth intact; resumed after making room',
                              problems))

    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / 'main.py'), 'dashboard', f'--port={port}',
                               f'--vis-env-path={work / "visdom"}'], cwd=work, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not server_up('http://127.0.0.1', port) and time.time() < deadline and server.poll() is None:
        time.sleep(0.2)
    if not server_up('http://127.0.0.1', port):
        os.killpg(server.pid, signal.SIGKILL)
        print('  skip dashboard killed mid-run: the server did not start (python main.py dashboard)')
        return results
    args = [a for a in common if a != '--vis=false']
    proc = Train([f'--checkpoint-dir={work / "dash"}', '--run-name=d', '--env=faults', f'--vis-port={port}', *args],
                 work)
    while not (work / 'dash' / 'd' / 'last.pth').exists() and proc.running():
        time.sleep(0.01)
    os.killpg(server.pid, signal.SIGKILL)  # the dashboard and the visdom server it started
    res = proc.wait()
    problems = [f'exit {res.returncode}: {res.stderr.strip().splitlines()[-1:]}'] if res.returncode else []
    warnings = (res.stdout + res.stderr).count('warning:')
    problems += [] if warnings == 1 else [f'{warnings} warnings']
    problems += [] if res.returncode else check_run(work / 'dash' / 'd', ref_dir)
    results.append(report('dashboard server killed mid-run: the run finishes with one warning', problems))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--work', default='', help='working folder (default: a new temporary one, removed after)')
    args = parser.parse_args()
    from conftest import write_class_folders
    work = Path(args.work or tempfile.mkdtemp(prefix='faults-')).resolve()
    write_class_folders(work / 'data' / 'train', ['a', 'b', 'c'], 10)
    common = [f'--train-data-root={work / "data" / "train"}', '--model=SqueezeNet', '--image-size=32',
              f'--max-epoch={args.epochs}', '--batch-size=8', '--num-workers=0', '--vis=false', '--ema']
    start = time.time()
    log = work / 'events.txt'
    res = train([f'--checkpoint-dir={work / "runs"}', '--run-name=ref', *common], work, log=str(log))
    assert res.returncode == 0, res.stderr[-2000:]
    ref_dir = work / 'runs' / 'ref'
    events = log.read_text().splitlines()
    points = kill_points(events)
    print(f'reference run: {time.time() - start:.0f} s, {len(events)} writes; {len(points)} kill points', flush=True)

    survived, lost, steps = 0, [], events.count('lr.csv') // args.epochs
    for n, (at, mode, what) in enumerate(points, 1):
        run_dir = work / 'runs' / f'k{n}'
        res = train([f'--checkpoint-dir={work / "runs"}', f'--run-name=k{n}', *common], work, at, mode)
        problems = [] if res.returncode == -signal.SIGKILL else [f'not killed: exit {res.returncode}']
        tmps = glob.glob(str(run_dir / '.tmp-*.pth'))
        if mode == 'during' and tmps:
            try:
                load(tmps[0])
                what += ' (the write ended first: killed at its rename)'
            except Exception:  # noqa: BLE001 -- a cut-short temporary is what this point is for
                what += f' (temporary cut at {os.path.getsize(tmps[0])} bytes)'
        problems += checkpoints_load(run_dir)
        if not problems:
            taken, kept = lost_steps(run_dir)
            lost.append(taken - kept)
            what += f'; lost {taken - kept} of {taken} steps'
            if taken - kept >= 2 * steps:
                problems.append(f'lost {taken - kept} steps: more than the epoch in progress and the one before it')
        res = train([f'--resume={run_dir / "last.pth"}'], work)
        problems += [f'resume: exit {res.returncode}: {res.stderr.strip().splitlines()[-1:]}'] if res.returncode \
            else check_run(run_dir, ref_dir)
        survived += report(f'kill {n:2d}: {what}', problems)
    print(f'faults survived: {survived} / {len(points)}  ({time.time() - start:.0f} s); a kill lost at most '
          f'{max(lost, default=0)} steps ({max(lost, default=0) / steps:.2f} epochs of {steps} steps): the epoch in '
          f'progress, and the one before while its last.pth was being written', flush=True)
    survived = 0
    points = term_points(events)
    for n, (at, mode, what) in enumerate(points, 1):
        run_dir = work / 'runs' / f't{n}'
        res = train([f'--checkpoint-dir={work / "runs"}', f'--run-name=t{n}', *common], work, at, mode)
        expected = -signal.SIGKILL if mode == 'term-kill' else 143
        problems = [] if res.returncode == expected else [f'exit {res.returncode}, not {expected}']
        problems += checkpoints_load(run_dir)
        if not problems:
            taken, kept = lost_steps(run_dir)
            what += f'; lost {taken - kept} of {taken} steps'
            if mode != 'term-kill' and taken != kept:
                problems.append('a signal lost steps: last.pth is not at the step it came')
            if mode != 'term-kill' and 'Continue it with: python main.py train --resume=' not in res.stderr:
                problems.append('no resume command printed')
        res = train([f'--resume={run_dir / "last.pth"}'], work)
        problems += [f'resume: exit {res.returncode}: {res.stderr.strip().splitlines()[-1:]}'] if res.returncode \
            else check_run(run_dir, ref_dir)
        survived += report(f'signal {n:2d}: {what}', problems)
    print(f'signals survived: {survived} / {len(points)}  ({time.time() - start:.0f} s): each resumed run ends with '
          f'the weights, metrics rows and lr.csv of the uninterrupted one', flush=True)
    others = extras(work, common, ref_dir)
    print(f'other faults handled: {sum(others)} / {len(others)}  (total {time.time() - start:.0f} s)')
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
