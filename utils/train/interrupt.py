"""A graceful stop within an epoch, and the exact resume of it.

While `fit` trains, SIGTERM (a scheduler's or a spot instance's notice, torchrun's stop) and SIGINT (Ctrl-C) do not
kill the process: the first one is recorded, the current optimizer step finishes, last.pth is written with
everything the rest of the epoch needs (`mid_epoch`: the batches done, the running loss and accuracy, every random
state), and the run ends with one line naming the resume command and the exit status of the signal (STATUS).
Later signals are ignored, so that a second Ctrl-C or a scheduler's repeated notice cannot cut the write short (it
is atomic anyway: a temporary file, then a rename). `--resume` then draws the epoch's order again from its seed,
skips the batches done and restores the random states: on the CPU with --num-workers=0 the resumed run ends with
the weights of an uninterrupted one, bit for bit; with worker processes, their augmentation draws differ after
the resume (each worker's stream depends on the batches it has seen).
"""
import random
import signal
import threading

import numpy as np
import torch

STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + the signal's number, as a shell reports a killed job


class StopRequest:
    """Within `with StopRequest() as stop:`, SIGTERM and SIGINT set `stop.signum` (the first one; later ones are
    ignored) instead of ending the process; the previous handlers come back on exit. Outside the main thread,
    where Python cannot take signals, nothing is installed."""

    def __init__(self):
        self.signum, self.previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in STATUS}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False

    def handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            print(f'\n{signal.Signals(signum).name}: stopping after the current step, writing last.pth ...',
                  flush=True)

    @property
    def requested(self):
        return self.signum is not None

    def status(self):
        return STATUS[self.signum]

    def name(self):
        return signal.Signals(self.signum).name


def random_states():
    """Every random state training draws from (torch's, CUDA's, numpy's, Python's), as plain values and tensors
    that a weights_only checkpoint can hold."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    out = {'torch': torch.get_rng_state(), 'python': random.getstate(),
           'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                     'has_gauss': int(has_gauss), 'gauss': float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out['cuda'] = torch.cuda.get_rng_state_all()
    return out


def set_random_states(states):
    """Restore what `random_states` recorded."""
    torch.set_rng_state(states['torch'])
    version, internal, gauss = states['python']
    random.setstate((version, tuple(internal), gauss))
    n = states['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['gauss']))
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


class SkipFirst(torch.utils.data.Sampler):
    """`sampler`'s order without its first `skip` indices: the rest of an interrupted epoch. The whole order is
    drawn first, as the uninterrupted epoch drew it (from the generator seeded for the epoch, or torch's global
    one), then `after_draw` runs (it restores the random states of the moment the epoch stopped)."""

    def __init__(self, sampler, skip, after_draw):
        self.sampler, self.skip, self.after_draw = sampler, skip, after_draw

    def __iter__(self):
        order = list(self.sampler)
        self.after_draw()
        yield from order[self.skip:]

    def __len__(self):
        return max(0, len(self.sampler) - self.skip)
