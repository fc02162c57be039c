"""Ship a checkpoint: export it to ONNX / TorchScript, check the export against PyTorch, and run an exported file
where val, testforacc and predict take a checkpoint.

The exported graph takes a batch of RGB images scaled to 0..1 at the checkpoint's image size -- (N, 3, S, S)
float32, N free -- and returns class probabilities (N, C): the run's normalisation is inside it. Beside each file,
<file>.json (the sidecar) names the classes, the image size, mean / std, the source checkpoint and its SHA-256, and
the file's own SHA-256 (a sidecar that does not describe the file beside it is refused).
"""
import contextlib
import json
import os
import warnings

import torch
from torch import nn

import config
from data.clean import sha256

FORMATS = {'onnx': '.onnx', 'torchscript': '.torchscript'}
TOLERANCE = 1e-4  # largest probability difference to PyTorch an export may have


class Deployable(nn.Module):
    """The model as it ships: RGB images scaled to 0..1 in, class probabilities out, normalisation inside."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images):
        return self.model((images - self.mean) / self.std).softmax(1)


@contextlib.contextmanager
def _quiet():
    """TorchScript calls warn that torch deprecates TorchScript, and tracing warns about Python-side checks it
    records as constants (sizes are fixed here anyway): neither is the user's to act on."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        yield


def to_onnx(deployable, example, path):
    """ONNX through torch.export (the dynamo exporter), the batch axis dynamic, one self-contained file."""
    with warnings.catch_warnings():  # CBAM / SE keep their last maps for inspection; the graph needs none of them
        warnings.filterwarnings('ignore', message='.*were assigned during export')
        _onnx(deployable, example, path)


def _onnx(deployable, example, path):
    torch.onnx.export(deployable, (example,), path, input_names=['images'], output_names=['probabilities'],
                      dynamic_shapes=({0: torch.export.Dim('batch')},), external_data=False, dynamo=True,
                      verbose=False)


def to_torchscript(deployable, example, path):
    """TorchScript by tracing (forward hooks included), frozen for inference (batch norm folded)."""
    with _quiet():
        torch.jit.save(torch.jit.freeze(torch.jit.trace(deployable, example)), path)


EXPORTERS = {'onnx': to_onnx, 'torchscript': to_torchscript}


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
            with _quiet():
                self.graph = torch.jit.load(path, map_location=device)

    def probabilities(self, images):
        """The exported graph itself: images scaled to 0..1 in, probabilities out."""
        if self.graph is not None:
            with _quiet():
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


def load_for_eval(cfg):
    """engine.load_for_eval for an exported file: (model, effective config, metadata as a checkpoint, device)."""
    from utils import engine
    meta = read_meta(cfg.load_path)
    eval_cfg = engine.merge_given(meta['config'], cfg)
    eval_cfg.norm_stats, eval_cfg.exported = meta['normalization'], meta['format']
    if eval_cfg.image_size != meta['image_size']:
        raise config.UserError(f'{cfg.load_path} takes {meta["image_size"]} px images; drop --image-size')
    if eval_cfg.head != 'softmax' or eval_cfg.tta == 'multiscale':
        raise config.UserError(f'an exported file gives probabilities at {meta["image_size"]} px only: --head=svm '
                               f'and --tta=multiscale need the .pth checkpoint')
    device = engine.select_device(eval_cfg)
    return Exported(cfg.load_path, meta, device).to(device), eval_cfg, meta, device


def parity_paths(cfg, classes):
    """The images the parity check runs on: those under --data-root (any layout), else the checkpoint's
    validation split."""
    from data import loaders
    from utils.inference import find_images
    try:
        if cfg.data_root:
            return [os.path.join(cfg.data_root, name) for name in find_images(cfg.data_root)]
        return [path for path, _ in loaders.train_val_samples(loaders.resolve_roots(cfg), classes)[2]]
    except ValueError as e:
        raise config.UserError(f'no images for the parity check ({e}); give --data-root=FOLDER of images, or '
                               f'--no-verify') from None


@torch.no_grad()
def parity(deployable, exported, paths, cfg):
    """(images compared, largest probability difference, images whose top-1 class differs) of the exported graph
    against the PyTorch model, both given the same 0..1 batches."""
    from data import loaders, transforms
    from data.dataset import ImageFolderDataset
    dataset = ImageFolderDataset([(p, i) for i, p in enumerate(paths)], ['?'],
                                 transforms.eval_transform(cfg, cfg.image_size))
    seen, worst, differ = 0, 0.0, 0
    for images, _, _ in loaders.eval_loader(dataset, cfg):
        if images is None:
            continue
        pixels = images * deployable.std + deployable.mean
        ref, got = deployable(pixels), exported.probabilities(pixels)
        worst = max(worst, (ref - got).abs().max().item())
        differ += int((ref.argmax(1) != got.argmax(1)).sum())
        seen += len(images)
    return seen, worst, differ


def verify(deployable, exported, paths, cfg, name):
    """Print the parity of an exported graph with the PyTorch model on `paths`; UserError (the export is refused)
    when a top-1 class differs or a probability by more than TOLERANCE."""
    seen, worst, differ = parity(deployable, exported, paths, cfg)
    verdict = (f'{name}: parity with PyTorch on {seen} images: max probability difference {worst:.1e} '
               f'(limit {TOLERANCE:.0e}), top-1 different on {differ}')
    if differ or worst > TOLERANCE or not seen:
        raise config.UserError(f'{verdict}: export refused, nothing written')
    print(verdict)


def export(cfg):
    """The `export` command: write <checkpoint>.onnx and/or .torchscript (with their sidecars) beside the checkpoint,
    each checked against the PyTorch model on the validation images unless --no-verify; a file is in place only
    once it passed. Returns the paths written."""
    from data import transforms
    from utils import engine
    fmt = cfg.format.lower()
    if fmt not in (*FORMATS, 'all'):
        raise config.UserError(f'unknown --format={cfg.format!r}; choose one of: {", ".join(FORMATS)}, all')
    if not cfg.load_path or is_exported(cfg.load_path):
        raise config.UserError('give the checkpoint to export with --load-path=checkpoints/<run>/best_model.pth')
    model, ecfg, ckpt, _ = engine.load_for_eval(cfg)
    paths = [] if cfg.no_verify else parity_paths(ecfg, ckpt['classes'])
    mean, std = transforms.norm_stats(ecfg)
    deployable = Deployable(model.cpu().eval(), mean, std).eval()
    size = ecfg.image_size
    meta = {'input': {'name': 'images', 'shape': ['batch', 3, size, size], 'dtype': 'float32',
                      'values': 'RGB scaled to 0..1'},
            'output': {'name': 'probabilities', 'shape': ['batch', ckpt['num_classes']]},
            'image_size': size, 'mean': list(mean), 'std': list(std), 'classes': list(ckpt['classes']),
            'model_name': ckpt['model_name'], 'num_classes': ckpt['num_classes'],
            'source': {'checkpoint': os.path.abspath(cfg.load_path), 'sha256': sha256(cfg.load_path)},
            'config': ckpt.get('config', {}), 'normalization': ckpt.get('normalization')}
    written = []
    for name in (FORMATS if fmt == 'all' else [fmt]):
        out = os.path.splitext(cfg.load_path)[0] + FORMATS[name]
        tmp = out + '.tmp'
        try:
            try:
                EXPORTERS[name](deployable, torch.rand(2, 3, size, size), tmp)
            except Exception as e:  # the exporters raise many kinds; each means "this model does not export"
                raise config.UserError(f'{ckpt["model_name"]} does not export to {name}: '
                                       f'{type(e).__name__}: {(str(e).strip() or "?").splitlines()[0][:300]}') from e
            file_meta = {'format': name, 'file': os.path.basename(out), 'sha256': sha256(tmp), **meta}
            if paths:
                verify(deployable, Exported(tmp, file_meta), paths, ecfg, name)
            engine.write_json(file_meta, out + '.json')
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        written.append(out)
        print(f'exported {out} (+ {os.path.basename(out)}.json): RGB 0..1 images of {size} px in, '
              f'{ckpt["num_classes"]} probabilities out')
    return written
