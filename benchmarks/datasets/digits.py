"""The digits demo and its long-tailed, label-noisy variant, from scikit-learn's bundled handwritten digits."""
import os
import shutil

from benchmarks.datasets import SPLITS, write_once


def build(root, seed=0):
    """root/digits: the demo of data/demo.py (1797 digits at 32 px, stratified 68/12/20 %, split by `seed`)."""
    from data.demo import ensure_demo

    def fill(folder):
        demo = ensure_demo(os.path.join(folder, 'demo'), seed)
        for split in SPLITS:
            os.replace(os.path.join(demo, split), os.path.join(folder, split))
        shutil.rmtree(demo)
    return write_once(root, 'digits', seed, fill)


def build_lt_noisy(root, seed=0):
    """root/digits-lt-noisy: the demo's training split made long-tailed (10:1) with 10 % of its labels flipped,
    as benchmarks/tricks.py measures the tricks on; validation and test are the demo's own."""
    from benchmarks.tricks import make_hard_demo
    demo = build(root, seed)

    def fill(folder):
        make_hard_demo(folder, seed, demo=demo)
        for split in ('val', 'test'):
            shutil.copytree(os.path.join(demo, split), os.path.join(folder, split))
    return write_once(root, 'digits-lt-noisy', seed, fill)
