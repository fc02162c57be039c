"""TensorBoard event files of a run (--tensorboard): what the visdom dashboard shows, written into the run directory
by torch.utils.tensorboard, so that `tensorboard --logdir checkpoints` lists every run.

Tags: `step/loss`, `step/loss_smoothed`, `step/lr` every print_freq iterations (x = iterations since the start);
`epoch/<key>` for every number of the epoch's metrics.jsonl row (train / val loss and accuracy, lr, seconds,
images/s, the EMA's), `val_acc_per_class/<class>` and the images `confusion matrix`, `worst misclassified` and
`training images` per epoch (x = epoch); the text `run log`.
"""
import os

import numpy as np

EVENTS = 'events.out.tfevents.'  # how TensorBoard's event files begin


def has_events(run_dir):
    return any(name.startswith(EVENTS) for name in os.listdir(run_dir))


class Board:
    """A SummaryWriter into `run_dir`, flushed after each epoch so that TensorBoard shows the run as it trains."""

    def __init__(self, run_dir):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=run_dir, flush_secs=30)

    def step(self, step, loss, smoothed, lr):
        self.writer.add_scalar('step/loss', loss, step)
        self.writer.add_scalar('step/loss_smoothed', smoothed, step)
        self.writer.add_scalar('step/lr', lr, step)

    def epoch(self, row, classes=(), per_class=()):
        """The numbers of a metrics.jsonl row, and the per-class validation accuracy, at x = row['epoch']."""
        e = row['epoch']
        for key, value in row.items():
            if key != 'epoch' and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f'epoch/{key}', value, e)
        for name, acc in zip(classes, per_class):
            self.writer.add_scalar(f'val_acc_per_class/{name}', float(acc), e)

    def image(self, tag, image, step):
        """An image: CHW uint8 array (a grid), or a PIL image."""
        array = np.asarray(image)
        self.writer.add_image(tag, array, step, dataformats='CHW' if array.shape[0] == 3 else 'HWC')

    def text(self, tag, text, step=0):
        self.writer.add_text(tag, text, step)

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()


def grid(images, nrow=8, padding=2):
    """(N, C, H, W) uint8 -> one CHW uint8 image of the tiles in rows of `nrow` (as visdom lays them out)."""
    import torch
    from torchvision.utils import make_grid
    return make_grid(torch.from_numpy(np.ascontiguousarray(images)), nrow=nrow, padding=padding,
                     pad_value=255).numpy()


def write_run(run_dir):
    """Event files of a finished run from its metrics.jsonl (epoch scalars; lr.csv's learning rate per step where the
    run has one); returns the number of epochs written."""
    import csv
    from utils.io import read_jsonl
    rows = read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))
    board = Board(run_dir)
    for row in rows:
        board.epoch(row)
    lr_path = os.path.join(run_dir, 'lr.csv')  # step, fractional epoch, learning rate
    if os.path.isfile(lr_path):
        with open(lr_path) as f:
            for step, _, lr in csv.reader(f):
                board.writer.add_scalar('step/lr', float(lr), int(step))
    board.close()
    return len(rows)
