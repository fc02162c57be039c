"""BasicModule: a classifier network with a named final layer and pretrained-weight loading."""
import torch
from torch import nn

from config import UserError
from utils.io import load_checkpoint


class BasicModule(nn.Module):
    """Wraps a network `net` whose last classification layer is reached by `head_path` (e.g. 'fc')."""

    head_path = 'fc'

    def __init__(self, net, num_classes):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.model_name = type(self).__name__

    def forward(self, x):
        return self.net(x)

    def forward_features(self, x):
        """Pooled penultimate features (the input of the final layer), shape (N, D)."""
        raise NotImplementedError

    @property
    def head(self):
        module = self.net
        for part in self.head_path.split('.'):
            module = module[int(part)] if part.isdigit() else getattr(module, part)
        return module

    def load_pretrained(self, path):
        """Start from a local weights file (plain state_dict, or a dict holding one under 'model' /
        'state_dict'); see `load_weights`."""
        state = load_checkpoint(path, 'cpu')
        for key in ('model', 'state_dict'):
            if isinstance(state.get(key), dict):
                state = state[key]
        return self.load_weights(state, path)

    def load_weights(self, state, source):
        """Load a state_dict of the network (`source` names it in messages); head weights of another class count
        are left at their random initialisation. Prints the missing and unexpected keys."""
        state = {_strip(k): v for k, v in state.items() if torch.is_tensor(v)}
        own = self.net.state_dict()
        head_keys = {f'{self.head_path}.{n}' for n, _ in self.head.named_parameters()}
        dropped = [k for k in head_keys if k in state and state[k].shape != own[k].shape]
        for k in dropped:
            del state[k]
        wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
        if wrong:
            raise UserError(f'{source}: weights do not fit {self.model_name} (shape differs for {wrong[:3]}); '
                            f'is it a file for another architecture?')
        matched = [k for k in state if k in own]
        if not matched:
            raise UserError(f'{source}: no weight matches {self.model_name}; is it a file for another architecture?')
        result = self.net.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if k not in dropped]
        print(f'pretrained weights from {source}: {len(matched)} tensors loaded'
              + (f'; head replaced for {self.num_classes} classes' if dropped else '')
              + (f'; {len(missing)} missing: {_few(missing)}' if missing else '')
              + (f'; {len(result.unexpected_keys)} unexpected: {_few(result.unexpected_keys)}'
                 if result.unexpected_keys else ''))
        return result

    def freeze_backbone(self, frozen=True):
        """Make every parameter but the final layer's untrainable (frozen=True) or trainable again."""
        head = {id(p) for p in self.head.parameters()}
        for p in self.parameters():
            p.requires_grad_(not frozen or id(p) in head)


def _strip(key):
    for prefix in ('module.', 'net.', '_orig_mod.'):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _few(keys, n=5):
    return ', '.join(keys[:n]) + (' ...' if len(keys) > n else '')
