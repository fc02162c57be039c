"""The fast path on CUDA: mixed precision, channels_last, cudnn.benchmark, torch.compile, and batches that
arrive as uint8 (from the RAM or GPU cache) finished -- augmented and normalised -- on the training device.

Each is a setting whose default ('auto') is the fastest correct choice for the device: on for CUDA, off on
the CPU, where bf16 autocast measured ~1.1x slower and channels_last no faster (see docs/speed.md).
On the CPU the AMP and channels_last settings are ignored with one note, never an error.
"""
import contextlib

import torch

from data.cache import use_channels_last

def amp_dtype(cfg, device):
    """torch.bfloat16 / torch.float16 for autocast on CUDA, or None (full precision)."""
    if device.type != 'cuda' or cfg.amp == 'off':
        return None
    if cfg.amp == 'auto':
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cfg.amp == 'bf16' else torch.float16


class Precision:
    """Autocast and, for fp16, a gradient scaler; plain fp32 steps when `dtype` is None."""

    def __init__(self, dtype, device):
        self.dtype, self.device = dtype, device
        self.scaler = torch.amp.GradScaler('cuda') if dtype == torch.float16 else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, loss, optimizer):
        """backward + optimizer step (scaled for fp16)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

    def __str__(self):
        return {None: 'fp32', torch.bfloat16: 'bf16 autocast', torch.float16: 'fp16 autocast + GradScaler'}[self.dtype]


def setup(model, cfg, device, wrap=None):
    """Apply the device settings to `model` (already on `device`); returns (model to train, Precision).
    `wrap` (e.g. DistributedDataParallel) goes on after the memory-format change and before torch.compile;
    the returned model shares `model`'s parameters."""
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    if use_channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)
    precision = Precision(amp_dtype(cfg, device), device)
    model = wrap(model) if wrap else model
    if cfg.compile:
        model = torch.compile(model, mode=cfg.compile_mode)
    return model, precision


