"""The dashboard of a training run: every window it shows, and when.

Once at the start: the run log (effective config), the class distribution of train and validation, and a
grid of the first training batch as the model sees it (augmented, un-normalised). Every `print_freq`
iterations: the training loss (raw and smoothed) and the learning rate. Every epoch: train / validation loss
and accuracy on shared axes, per-class validation accuracy, the confusion matrix, the worst-misclassified
validation images, and one line in the run log (time, throughput, ETA). At the end: the worst mistakes of
best_model.pth with their Grad-CAM maps, the same images as checkpoints/<run>/report.html.
"""
import html
import os
import time

import numpy as np

from data.transforms import IMAGENET_MEAN, IMAGENET_STD, norm_stats
from utils.evaluate.metrics import confusion, confusion_image, per_class_accuracy
from utils.dashboard.client import LOG_NAME, Visualizer

SMOOTHING = 0.8  # exponential moving average of the logged training loss (as TensorBoard's smoothing slider)
WORST = 16  # misclassified validation images shown per epoch
TILE = 96  # side of one image in the worst-misclassified grid, pixels
GRID = 32  # training images shown from the first batch

# window names: a rerun into the same env replaces these windows instead of adding new ones
WIN = {'log': 'run log', 'classes': 'class distribution', 'batch': 'training images', 'loss': 'train loss',
       'lr': 'learning rate', 'epoch_loss': 'loss per epoch', 'epoch_acc': 'accuracy per epoch',
       'per_class': 'per-class val accuracy', 'confusion': 'confusion matrix', 'worst': 'worst misclassified',
       'gradcam': 'worst mistakes, Grad-CAM'}


def unnormalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """(N, C, H, W) tensor normalised with (mean, std) -> uint8 numpy array, as the images looked before. uint8
    images are the pixels already: the RAM cache keeps them so and normalises only the batches it trains on."""
    if not images.is_floating_point():
        return images.detach().cpu().numpy().astype(np.uint8)
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    array = images.detach().float().cpu().numpy() * std + mean
    return (np.clip(array, 0, 1) * 255).round().astype(np.uint8)


def enlarge(images, side):
    """Nearest-neighbour upscale of (N, C, H, W) uint8 so tiny images stay visible (integer factor)."""
    factor = max(1, side // max(images.shape[-2:]))
    return images.repeat(factor, axis=2).repeat(factor, axis=3) if factor > 1 else images


def labelled_tile(image, lines, side=TILE):
    """One CHW uint8 image resized to side x side with the text lines written in a strip beneath it."""
    from PIL import Image, ImageDraw
    tile = Image.fromarray(image.transpose(1, 2, 0)).resize((side, side), Image.NEAREST)
    canvas = Image.new('RGB', (side, side + 12 * len(lines) + 2), 'white')
    canvas.paste(tile, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((2, side + 1 + 12 * k), line[:side // 6], fill='black')
    return np.asarray(canvas).transpose(2, 0, 1)


def pane_size(images, nrow, padding=2):
    """width / height of an image-grid window that shows the whole grid and its caption (visdom crops)."""
    cols, rows = min(nrow, len(images)), -(-len(images) // nrow)
    return dict(width=cols * (images.shape[3] + 2 * padding) + 20, height=rows * (images.shape[2] + 2 * padding) + 90)


def worst_misclassified(probs, targets, k=WORST):
    """Indices of the misclassified rows, lowest probability of the true class first (the highest losses)."""
    wrong = np.flatnonzero(probs.argmax(1) != targets)
    return wrong[np.argsort(probs[wrong, targets[wrong]], kind='stable')][:k]


def eta(seconds):
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class RunDashboard:
    """The windows of one training run in the visdom env `cfg.env`, recorded in `<run_dir>/visdom.log`; with
    --tensorboard, the same scalars and pictures as TensorBoard events in `run_dir` (board.py)."""

    def __init__(self, cfg, run_dir, classes, start_epoch=0, enabled=True):
        self.cfg, self.run_dir, self.classes = cfg, run_dir, list(classes)
        self.vis = Visualizer(cfg.env, cfg.vis_server, cfg.vis_port, enabled=cfg.vis and enabled,
                              log_path=os.path.join(run_dir, LOG_NAME))
        self.board = None
        if cfg.tensorboard and enabled:
            from utils.dashboard.board import Board
            self.board = Board(run_dir)
        self.ema, self.batch_shown, self.lines = None, False, []
        self.epochs_left, self.epoch_times, self.last = cfg.max_epoch - start_epoch, [], time.time()

    def start(self, train_set, val_set, plan=None):
        """The run log with the run's plan (`plan`: as final, once --lr=auto has chosen), and the class distribution
        of both splits."""
        self.cfg = plan or self.cfg
        if self.board:
            self.board.text('run log', '\n'.join(f'    {k} = {v!r}' for k, v in self.cfg.to_dict().items()))
        if not self.vis.active:
            return
        self.show_log()
        counts = np.stack([np.bincount(np.asarray(s.targets, dtype=np.int64), minlength=len(self.classes))
                           for s in (train_set, val_set)], 1)
        self.vis.call('bar', X=counts, win=WIN['classes'],
                      opts=dict(title=WIN['classes'], legend=['train', 'validation'], rownames=self.classes,
                                xlabel='class', ylabel='images', xtype='category'))

    def show_log(self):
        settings = '\n'.join(f'{k} = {v!r}' for k, v in self.cfg.to_dict().items())
        text = (f'<b>run</b> {html.escape(os.path.abspath(self.run_dir))}<br>' + '<br>'.join(self.lines)
                + f'<pre style="font-size:11px">{html.escape(settings)}</pre>')
        self.vis.text(text, win=WIN['log'], title=WIN['log'], width=480, height=300)

    def show_batch(self, images, labels):
        """The first training batch as the model receives it (after augmentation and mixing), once per run."""
        if self.batch_shown or not (self.vis.active or self.board):
            return
        self.batch_shown = True
        images = images[:GRID]
        if images.shape[-1] > 2 * TILE:  # keep the grid (and the log) small for large images
            import torch.nn.functional as F
            images = F.interpolate(images.float(), size=(2 * TILE, 2 * TILE), mode='bilinear', antialias=True)
        shown = enlarge(unnormalize(images, *norm_stats(self.cfg)), 64)
        names = ' '.join(self.classes[int(t)] for t in labels[:GRID])
        if self.board:
            from utils.dashboard.board import grid
            self.board.image('training images', grid(shown, 8), 0)
        self.vis.call('images', shown, nrow=8, win=WIN['batch'],
                      opts=dict(title=WIN['batch'], caption=f'first batch, un-normalised; classes: {names}',
                                **pane_size(shown, 8)))

    def step(self, epoch, i, iters, loss, lr):
        """One logged training step: raw and smoothed loss, learning rate (x = fractional epoch)."""
        if not (self.vis.active or self.board):
            return
        self.ema = loss if self.ema is None else SMOOTHING * self.ema + (1 - SMOOTHING) * loss
        if self.board:
            self.board.step(epoch * iters + i, loss, self.ema, lr)
        x = epoch + i / max(1, iters)
        self.vis.plot(WIN['loss'], [loss, self.ema], x, legend=['raw', 'smoothed'])
        self.vis.plot(WIN['lr'], lr, x, ytype='log')

    def epoch(self, row, val, val_set, bad_paths=()):
        """The per-epoch windows from the metrics row and the validation result (probs, targets)."""
        now = time.time()
        self.epoch_times.append(now - self.last)
        self.last, self.epochs_left = now, self.epochs_left - 1
        if not (self.vis.active or self.board):
            return
        e = row['epoch']
        probs, targets = val['probs'], val['targets']
        cm = confusion(targets, probs.argmax(1), len(self.classes))
        per_class = np.nan_to_num(per_class_accuracy(cm))
        if self.board:
            self.board.epoch(row, self.classes, per_class)
            self.board.image('confusion matrix', confusion_image(cm, self.classes), e)
        if self.vis.active:
            self.vis.plot(WIN['epoch_loss'], [row['train_loss'], row['val_loss']], e, legend=['train', 'validation'])
            self.vis.plot(WIN['epoch_acc'], [row['train_acc'], row['val_acc']], e, legend=['train', 'validation'])
            self.vis.call('bar', X=per_class, win=WIN['per_class'],
                          opts=dict(title=f'{WIN["per_class"]} (epoch {e})', rownames=self.classes,
                                    xlabel='class', ylabel='accuracy', ytickmin=0, ytickmax=1, xtype='category'))
            self.vis.call('heatmap', cm, win=WIN['confusion'],
                          opts=dict(title=f'{WIN["confusion"]} (epoch {e})', columnnames=self.classes,
                                    rownames=self.classes, xlabel='predicted', ylabel='true', xtype='category',
                                    ytype='category'))
        self.show_worst(probs, targets, val_set, bad_paths, e)
        if self.board:
            self.board.flush()
        if not self.vis.active:
            return
        left = self.epochs_left * float(np.mean(self.epoch_times))
        self.lines.append(f'epoch {e}/{self.cfg.max_epoch}: {self.epoch_times[-1]:.1f} s, '
                          f'{row["images_per_s"]:.0f} img/s, train loss {row["train_loss"]:.4f}, '
                          f'val loss {row["val_loss"]:.4f}, val acc {row["val_acc"]:.4f}, '
                          f'lr {row["lr"]:.3g}, ETA {eta(left)}')
        self.show_log()

    def stopped(self, epoch, reason):
        """One line in the run log: the run stopped early after `epoch` (--patience), and why."""
        self.lines.append(f'stopped early after epoch {epoch}/{self.cfg.max_epoch}: {html.escape(reason)}')
        if self.board:
            self.board.text('stopped early', f'after epoch {epoch}: {reason}', epoch)
        if self.vis.active:
            self.show_log()

    def close(self):
        """The TensorBoard events written to disk (visdom's calls are sent and logged as they happen)."""
        if self.board:
            self.board.close()

    def show_worst(self, probs, targets, val_set, bad_paths, epoch):
        """The misclassified validation images with the highest loss, captioned true / predicted."""
        # evaluate() skips unreadable files, so its rows are the readable samples in loader order
        readable = [k for k, (path, _) in enumerate(val_set.samples) if path not in bad_paths]
        if len(readable) != len(targets):
            return
        worst = worst_misclassified(probs, targets)
        if not len(worst) and self.vis.active:
            self.vis.call('text', f'epoch {epoch}: no misclassified validation image', win=WIN['worst'],
                          opts=dict(title=WIN['worst']))
            return
        tiles, captions = [], []
        for row in worst:
            image = unnormalize(val_set[readable[row]][0][None], *norm_stats(self.cfg))[0]
            true, pred = self.classes[targets[row]], self.classes[probs[row].argmax()]
            tiles.append(labelled_tile(image, [f'true {true}', f'pred {pred} {probs[row].max():.2f}']))
            captions.append(f'{true}->{pred}')
        if not tiles:
            return
        tiles = np.stack(tiles)
        if self.board:
            from utils.dashboard.board import grid
            self.board.image('worst misclassified', grid(tiles, 8), epoch)
        self.vis.call('images', tiles, nrow=8, win=WIN['worst'],
                      opts=dict(title=f'{WIN["worst"]} (epoch {epoch})',
                                caption=f'true->predicted, worst first: {", ".join(captions)}', **pane_size(tiles, 8)))

    def show_gradcam(self, rows, captions):
        """The report's worst validation mistakes: one CHW row per image (the image, the Grad-CAM map of the
        predicted class, of the true class), worst first."""
        if not self.vis.active:
            return
        self.vis.call('images', rows, nrow=2, win=WIN['gradcam'],
                      opts=dict(title=f'{WIN["gradcam"]} (best_model.pth)', caption='image | map of the predicted '
                                f'class | map of the true class; true->predicted: {", ".join(captions)}',
                                **pane_size(rows, 2)))
