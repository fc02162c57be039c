"""Channel/spatial attention blocks (SE, CBAM) and a way to add them to torchvision ResNets.

- SE: Hu et al. 2018, "Squeeze-and-Excitation Networks".
- CBAM: Woo et al. 2018, "CBAM: Convolutional Block Attention Module".
"""
import functools

import torch
from torch import nn

import config

ATTENTION_KINDS = ('none', 'se', 'cbam')


def _hidden(channels, ratio):
    """Bottleneck width, at least 1 so narrow layers still work."""
    if channels < 1 or ratio < 1:
        raise ValueError(f"attention needs channels >= 1 and ratio >= 1, got {channels}, {ratio}")
    return max(1, channels // ratio)


class ChannelAttention(nn.Module):
    """Per-channel weights in [0, 1] from avg- and max-pooled features through one shared MLP."""

    def __init__(self, channels, ratio=16):
        super().__init__()
        hidden = _hidden(channels, ratio)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x):
        """Return the (N, C, 1, 1) channel attention map for ``x``."""
        avg = self.mlp(torch.mean(x, dim=(2, 3), keepdim=True))
        peak = self.mlp(torch.amax(x, dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """Per-pixel weights in [0, 1] from a conv over the channel-mean and channel-max maps."""

    def __init__(self, kernel_size=7):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SpatialAttention kernel_size must be odd (3 or 7), got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        """Return the (N, 1, H, W) spatial attention map for ``x``."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class IdentityStart(nn.Module):
    """An attention block that can start as the identity: with a `gate` (0 at first, learned) it returns
    x + gate * (attended - x), so added to published weights it leaves their features unchanged until training
    opens it. Without a gate (training from scratch) it returns the attended features as they are."""

    def __init__(self):
        super().__init__()
        self.register_parameter('gate', None)

    def start_as_identity(self):
        self.gate = nn.Parameter(torch.zeros(1, device=next(self.parameters()).device))

    def blend(self, x, attended):
        return attended if self.gate is None else x + self.gate * (attended - x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + 'gate' in state_dict and self.gate is None:  # a checkpoint of a gated model
            self.start_as_identity()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CBAM(IdentityStart):
    """Channel attention then spatial attention, each multiplied into the features."""

    def __init__(self, channels, ratio=16, kernel_size=7):
        super().__init__()
        self.channel = ChannelAttention(channels, ratio)
        self.spatial = SpatialAttention(kernel_size)
        self.last_channel_map = None
        self.last_spatial_map = None

    def forward(self, x):
        """Return ``x`` reweighted by both maps; the maps are kept (detached) for inspection."""
        inputs = x
        channel_map = self.channel(x)
        x = x * channel_map
        spatial_map = self.spatial(x)
        self.last_channel_map = channel_map.detach()
        self.last_spatial_map = spatial_map.detach()
        return self.blend(inputs, x * spatial_map)


class SE(IdentityStart):
    """Squeeze (global average pool) and excitation (bottleneck MLP, sigmoid) channel gating."""

    def __init__(self, channels, ratio=16):
        super().__init__()
        hidden = _hidden(channels, ratio)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.last_channel_map = None

    def forward(self, x):
        """Return ``x`` scaled by its channel gates; the gates are kept (detached) for inspection."""
        gate = torch.sigmoid(self.fc(torch.mean(x, dim=(2, 3), keepdim=True)))
        self.last_channel_map = gate.detach()
        return self.blend(x, x * gate)


def _attend(attention, module, inputs, output):
    """Forward hook: replace the norm layer's output by the attended output."""
    return attention(output)


def add_attention(model, kind, identity=False):
    """Add an SE or CBAM module to every residual block of a torchvision ResNet, in place; with `identity`
    each starts as the identity (see IdentityStart), for weights trained without it.

    The module goes on the residual branch (after bn2 of a BasicBlock, bn3 of a Bottleneck),
    before the identity is added. It is registered as ``block.attention`` and applied by a
    forward hook, so existing parameter names do not change and pretrained torchvision
    state_dicts still load (only the ``*.attention.*`` keys are new). Returns ``model``.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    kind = config.check_choice('attention', kind, ATTENTION_KINDS)
    if kind == 'none':
        return model
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    if not blocks:
        raise ValueError("attention can only be added to torchvision ResNets "
                         "(no BasicBlock/Bottleneck found); use attention='none'")
    for block in blocks:
        if hasattr(block, 'attention'):
            raise ValueError("the model already has attention; add it only once")
        norm = block.bn3 if isinstance(block, Bottleneck) else block.bn2
        channels = norm.num_features
        block.attention = SE(channels) if kind == 'se' else CBAM(channels)
        if identity:
            block.attention.start_as_identity()
        # functools.partial of a module-level function keeps the model picklable/deep-copyable.
        norm.register_forward_hook(functools.partial(_attend, block.attention))
    return model
