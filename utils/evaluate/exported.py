"""Running an exported file (.onnx, .torchscript) where val, testforacc and predict take a checkpoint: its sidecar
(<file>.json: classes, image size, normalisation, SHA-256s), checked to describe that very file, and the runtime
behind the evaluation pipeline's interface. Writing such files is export.py's job."""
import contextlib
import dataclasses
import json
import os
import warnings

import torch
from torch import nn

import config
from utils.io import sha256

FORMATS = {'onnx': '.onnx', 'torchscript': '.torchscript'}


@contextlib.contextmanager
def quiet():
    """TorchScript calls warn that torch deprecates TorchScript, and tracing warns about Python-side checks it
    records as constants (sizes are fixed here anyway): neither is the user's to act on."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        yield


class Exported(nn.Module):
    """An exported file run by its runtime -- ONNX Runtime (CPU), TorchScript (on `device`) -- behind the evaluation
    pipeline's interface: the pipeline's normalised batches in, LOG-probabilities out (so its softmax gives the
    probabilities back and its cross-entropy is their log-loss)."""

    def __init__(self, path, meta, device='cpu'):
        super().__init__()
        self.format, self.num_classes = meta['format'], meta['num_classes']
        self.register_buffer('mean', torch.tensor(meta['mean']).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(meta['std']).view(1, 3, 1, 1))
        self.session = self.graph = None
        if self.format == 'onnx':
            import onnxruntime
            self.session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
        else:
            with quiet():
                self.graph = torch.jit.load(path, map_location=device)

    def probabilities(self, images):
        """The exported graph itself: images scaled to 0..1 in, probabilities out."""
        if self.graph is not None:
            with quiet():
                return self.graph(images)
        out = self.session.run(None, {'images': images.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(images.device)

    def forward(self, x):
        return self.probabilities(x * self.std + self.mean).clamp_min(1e-30).log()

    def forward_features(self, x):
        raise config.UserError(f'an exported {self.format} file gives probabilities only; the SVM head needs the '
                               f'network\'s features: use the .pth checkpoint')


def is_exported(path):
    """Whether `path` names an exported file (.onnx, .torchscript) rather than a checkpoint."""
    return os.path.splitext(str(path))[1].lower() in FORMATS.values()


def read_meta(path):
    """The sidecar of an exported file, checked to describe that very file."""
    side = path + '.json'
    if not os.path.isfile(path):
        raise config.UserError(f'{path} does not exist; export a checkpoint first: python main.py export '
                               f'--load-path=checkpoints/<run>/best_model.pth')
    if not os.path.isfile(side):
        raise config.UserError(f'{side} is missing: it holds the classes, image size and normalisation of {path}; '
                               f'export the checkpoint again')
    with open(side) as f:
        meta = json.load(f)
    if meta.get('sha256') != sha256(path):
        raise config.UserError(f'{side} describes another file than {path} (SHA-256 differs); export again')
    return meta


def load_exported(cfg):
    """loop.load_for_eval for an exported file: (model, plan, metadata as a checkpoint, device); the plan is the one
    its checkpoint was trained with, the image size and statistics its sidecar names."""
    meta = read_meta(cfg.load_path)
    plan = config.for_evaluation(config.stored_plan(meta), cfg, cfg.load_path)
    plan = dataclasses.replace(plan, exported=meta['format'] + ('-int8' if meta.get('quantization') else ''),
                               image_size=meta['image_size'], mean=tuple(meta['mean']), std=tuple(meta['std']))
    if plan.head != 'softmax' or plan.tta == 'multiscale':
        raise config.UserError(f'an exported file gives probabilities at {meta["image_size"]} px only: --head=svm '
                               f'and --tta=multiscale need the .pth checkpoint')
    device = torch.device(plan.device)
    return Exported(cfg.load_path, meta, device).to(device), plan, meta, device
