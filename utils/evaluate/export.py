"""Ship a checkpoint: export it to ONNX / TorchScript, check the export against PyTorch, and run an exported file
where val, testforacc and predict take a checkpoint.

The exported graph takes a batch of RGB images scaled to 0..1 at the checkpoint's image size -- (N, 3, S, S)
float32, N free -- and returns class probabilities (N, C): the run's normalisation is inside it. Beside each file,
<file>.json (the sidecar) names the classes, the image size, mean / std, the source checkpoint and its SHA-256, and
the file's own SHA-256 (a sidecar that does not describe the file beside it is refused).
"""
import os
import warnings

import torch
from torch import nn

import config
from utils.evaluate.exported import FORMATS, Exported, is_exported, quiet
from utils.evaluate.loop import load_for_eval
from utils.io import sha256, write_json

TOLERANCE = 1e-4  # largest probability difference to PyTorch an export may have
INT8_LOSS = 0.01  # largest drop of validation top-1 an int8 file may have against its float32 source
CALIBRATION = 256  # training images the int8 quantizer calibrates its activation ranges on


class Deployable(nn.Module):
    """The model as it ships: RGB images scaled to 0..1 in, class probabilities out, normalisation inside."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images):
        return self.model((images - self.mean) / self.std).softmax(1)


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
    with quiet():
        torch.jit.save(torch.jit.freeze(torch.jit.trace(deployable, example)), path)


EXPORTERS = {'onnx': to_onnx, 'torchscript': to_torchscript}


def to_int8(onnx_path, out, batches):
    """Quantize the float32 ONNX file `onnx_path` into `out` with onnxruntime's static quantizer: weights int8 per
    channel, activations uint8 with ranges calibrated (min / max) on `batches` of 0..1 images (numpy), QDQ format."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.left = iter(batches)

        def get_next(self):
            batch = next(self.left, None)
            return None if batch is None else {'images': batch}

    prepared = out + '.pre'
    try:
        # constant folding and ONNX shape inference (torch.export's graphs have no symbolic shapes to infer)
        quant_pre_process(onnx_path, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, out, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)


def pixel_batches(samples, cfg):
    """(0..1 image batches, labels) of `samples` [(path, label)] through the checkpoint's evaluation preprocessing."""
    from data import loaders, transforms
    from data.dataset import ImageFolderDataset
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in transforms.norm_stats(cfg))
    dataset = ImageFolderDataset(samples, ['?'], transforms.eval_transform(cfg, cfg.image_size))
    return [(images * std + mean, labels) for images, labels, _ in loaders.eval_loader(dataset, cfg)
            if images is not None]


def top1(exported, batches):
    right = sum(int((exported.probabilities(images).argmax(1) == labels).sum()) for images, labels in batches)
    return right / max(1, sum(len(labels) for _, labels in batches))


def export_int8(onnx_path, cfg, classes, meta):
    """<checkpoint>.int8.onnx and its sidecar from the float32 `onnx_path` (to_int8, calibrated on CALIBRATION
    training images); UserError, nothing written, when its validation top-1 is more than INT8_LOSS below the
    float32 file's. Returns its path."""
    import numpy as np
    from data import loaders
    out = os.path.splitext(onnx_path)[0] + '.int8.onnx'
    _, train, val = loaders.train_val_samples(loaders.resolve_roots(cfg), classes)
    if not val:
        raise config.UserError('--int8 checks the quantized file on the validation split, and it is empty')
    pick = np.random.default_rng(cfg.seed).permutation(len(train))[:CALIBRATION]
    calibration = [images.numpy() for images, _ in pixel_batches([train[i] for i in sorted(pick)], cfg)]
    tmp = out + '.tmp'
    try:
        to_int8(onnx_path, tmp, calibration)
        batches = pixel_batches(val, cfg)
        file_meta = {**meta, 'file': os.path.basename(out), 'sha256': sha256(tmp),
                     'quantization': {'kind': 'int8 static (onnxruntime, QDQ)', 'calibration_images': len(pick),
                                      'source': os.path.basename(onnx_path)}}
        before, after = top1(Exported(onnx_path, meta), batches), top1(Exported(tmp, file_meta), batches)
        seen = sum(len(labels) for _, labels in batches)
        verdict = (f'onnx int8: top-1 {100 * after:.2f}% on {seen} validation images against {100 * before:.2f}% '
                   f'for float32 (limit {100 * INT8_LOSS:.0f} point below)')
        if after < before - INT8_LOSS:
            raise config.UserError(f'{verdict}: int8 export refused, nothing written')
        file_meta['quantization'].update(val_top1=after, val_top1_float32=before, val_images=seen)
        write_json(file_meta, out + '.json')
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f'{verdict}\nexported {out} (+ {os.path.basename(out)}.json): {os.path.getsize(out) / 2**20:.1f} MiB '
          f'against {os.path.getsize(onnx_path) / 2**20:.1f} MiB')
    return out


def parity_paths(cfg, classes):
    """The images the parity check runs on: those under --data-root (any layout), else the checkpoint's
    validation split."""
    from data import loaders
    from utils.evaluate.loop import find_images
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
    seen, worst, differ = 0, 0.0, 0
    for pixels, _ in pixel_batches([(p, i) for i, p in enumerate(paths)], cfg):
        ref, got = deployable(pixels), exported.probabilities(pixels)
        worst = max(worst, (ref - got).abs().max().item())
        differ += int((ref.argmax(1) != got.argmax(1)).sum())
        seen += len(pixels)
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
    fmt = cfg.format.lower()
    if fmt not in (*FORMATS, 'all'):
        raise config.UserError(f'unknown --format={cfg.format!r}; choose one of: {", ".join(FORMATS)}, all')
    if not cfg.load_path or is_exported(cfg.load_path):
        raise config.UserError('give the checkpoint to export with --load-path=checkpoints/<run>/best_model.pth')
    if cfg.int8 and fmt == 'torchscript':
        raise config.UserError('--int8 quantizes the ONNX file: give --format=onnx (or all)')
    model, ecfg, ckpt, _ = load_for_eval(cfg)
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
            'plan': config.stored_plan(ckpt).to_dict(), 'temperature': ckpt.get('temperature')}
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
            write_json(file_meta, out + '.json')
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        written.append(out)
        print(f'exported {out} (+ {os.path.basename(out)}.json): RGB 0..1 images of {size} px in, '
              f'{ckpt["num_classes"]} probabilities out')
        if name == 'onnx' and cfg.int8:
            written.append(export_int8(out, ecfg, ckpt['classes'], file_meta))
    return written
