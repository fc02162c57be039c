"""Where the model looked: Grad-CAM (Selvaraju et al., 2017) through the pytorch-grad-cam package.

The target layer is chosen per model family (timm's own `feature_info` stages, torchvision's ResNet layer1..4,
the blocks of AlexNet's and SqueezeNet's `features`): the deepest stage whose map is still at least MIN_SIDE
cells wide at the image size. `python main.py explain` writes an overlay per image and an HTML index.
"""
import html
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from torch import nn

import config

MIN_SIDE = 4  # a coarser map is one colour: ResNet's last stage is 1 x 1 at 32 px, so layer2 (4 x 4) is used there
TILE = 96  # shortest side, in pixels, of an image and of its overlay in the pictures written


class Unsupported(config.UserError):
    """The model has no convolutional feature map that Grad-CAM can weigh (e.g. a vision transformer's tokens)."""


def candidate_layers(model):
    """(name, module, channels or None) of the feature stages of `model`, shallow to deep, by family."""
    net = getattr(model, 'net', model)
    if getattr(net, 'feature_info', None):  # every timm model lists its stages
        return [(f['module'], net.get_submodule(f['module']), f['num_chs']) for f in net.feature_info if f['module']]
    if all(hasattr(net, f'layer{i}') for i in range(1, 5)):  # torchvision's ResNet layout: ResNet, ResNeSt
        return [(f'layer{i}', getattr(net, f'layer{i}'), None) for i in range(1, 5)]
    if isinstance(getattr(net, 'features', None), nn.Sequential):  # AlexNet, SqueezeNet
        skip = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout)
        return [(f'features.{i}', m, None) for i, m in enumerate(net.features) if not isinstance(m, skip)]
    return []


def target_layer(model, image_size):
    """(name, module) Grad-CAM weighs for `model` at `image_size`: the deepest stage whose (N, C, H, W) map is at
    least MIN_SIDE wide, else the one with the widest map. Puts the model in eval mode; Unsupported names the
    model when none of its stages gives such a map."""
    layers, shapes = candidate_layers(model), {}

    def keep_shape(name):
        def hook(_module, _input, out):
            shapes[name] = tuple(out.shape) if torch.is_tensor(out) else ()
        return hook
    hooks = [m.register_forward_hook(keep_shape(name)) for name, m, _ in layers]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    # a 4-d output must be channels-first (Swin's stages are N, H, W, C)
    maps = [(name, m, shapes[name]) for name, m, chs in layers
            if len(shapes.get(name, ())) == 4 and chs in (None, shapes[name][1])]
    if not maps:
        raise Unsupported(f'Grad-CAM needs a convolutional feature map; {getattr(model, "model_name", type(model))} '
                          f'has none that it can weigh (a transformer\'s tokens, or an unknown layout)')
    wide = [m for m in maps if min(m[2][2:]) >= MIN_SIDE]
    name, module, _ = wide[-1] if wide else max(maps, key=lambda m: min(m[2][2:]))
    return name, module


def class_maps(model, layer, images, classes):
    """(N, H, W) Grad-CAM maps in [0, 1] of a normalised batch `images` for one class index per image."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    with GradCAM(model=model, target_layers=[layer]) as cam:
        # an input that asks for its gradient keeps the graph alive when the weights are frozen (--freeze-backbone)
        return cam(input_tensor=images.detach().requires_grad_(True),
                   targets=[ClassifierOutputTarget(int(c)) for c in classes])


def overlay(image, cam):
    """A CHW uint8 image with its (H, W) map in [0, 1] laid over it in jet colours, as CHW uint8."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    return show_cam_on_image(image.transpose(1, 2, 0).astype(np.float32) / 255, cam, use_rgb=True).transpose(2, 0, 1)


def image_paths(data_root):
    """(shown name, path) of every image in --data-root: a folder (any depth), one image file, or several image
    files separated by commas."""
    from data.dataset import is_image_file
    from utils.inference import find_images
    if not data_root:
        raise config.UserError('give the images to explain with --data-root=FOLDER (or an image file, or files '
                               'separated by commas)')
    if os.path.isdir(data_root):
        return [(name, os.path.join(data_root, name)) for name in find_images(data_root)]
    files = [data_root] if os.path.exists(data_root) else [p.strip() for p in data_root.split(',') if p.strip()]
    wrong = [p for p in files if not os.path.isfile(p) or not is_image_file(os.path.basename(p))]
    if wrong:
        raise config.UserError(f'--data-root: {", ".join(wrong[:3])} is not an image file or a folder; give a folder '
                               f'of images, an image file, or image files separated by commas')
    return [(p, p) for p in files]


def output_folder(cfg):
    """Where explain writes: --output (a new or empty folder), else a new explain-<time> beside the checkpoint."""
    if not cfg.output:
        folder = os.path.dirname(os.path.abspath(cfg.load_path))
        return os.path.join(folder, f'explain-{time.strftime("%Y%m%d-%H%M%S")}')
    if os.path.exists(cfg.output) and (not os.path.isdir(cfg.output) or os.listdir(cfg.output)):
        raise config.UserError(f'--output={cfg.output} exists and is not an empty folder; give a new folder so that '
                               f'nothing in it is overwritten')
    return os.path.abspath(cfg.output)


def explain(cfg):
    """Grad-CAM of --load-path for every image of --data-root: one PNG per image (the image beside the map of its
    top-1 class) and index.html listing them with their top-k predictions. Returns the output folder."""
    from utils import engine
    from utils.evaluate.run_report import page
    if not cfg.load_path:
        raise config.UserError('give the checkpoint to explain with --load-path=checkpoints/<run>/best_model.pth')
    if cfg.topk < 1:
        raise config.UserError(f'--topk must be at least 1, got {cfg.topk}')
    paths, out = image_paths(cfg.data_root), output_folder(cfg)
    model, cfg, ckpt, device = engine.load_for_eval(cfg)
    classes = ckpt['classes']
    layer_name, layer = target_layer(model, cfg.image_size)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out), prefix='.explain-')  # renamed to `out` once complete
    try:
        cards, skipped = explain_into(tmp, model, layer, paths, classes, cfg, device)
        if not cards:
            raise config.UserError(f'no readable image in --data-root={cfg.data_root} ('
                                   + '; '.join(f'{n}: {r}' for n, r in skipped[:3]) + ')')
        body = (f'<h1>Grad-CAM of {html.escape(ckpt["model_name"])}</h1><p>'
                f'{html.escape(os.path.abspath(cfg.load_path))}; layer <code>{layer_name}</code>; each image beside '
                f'the map of its top-1 class, with its top-{cfg.topk} predictions.</p>{"".join(cards)}')
        if skipped:
            body += '<h2>Unreadable files</h2><ul>' + ''.join(
                f'<li>{html.escape(n)}: {html.escape(r)}</li>' for n, r in skipped) + '</ul>'
        with open(os.path.join(tmp, 'index.html'), 'w') as f:
            f.write(page(f'Grad-CAM: {ckpt["model_name"]}', body))
        os.replace(tmp, out)  # an empty --output folder is replaced whole
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f'Grad-CAM of {len(cards)} image(s) (layer {layer_name}) -> {os.path.join(out, "index.html")}'
          + (f'; {len(skipped)} unreadable: ' + ', '.join(n for n, _ in skipped[:5]) if skipped else ''))
    return out


def explain_into(folder, model, layer, paths, classes, cfg, device):
    """Write one PNG per readable image of `paths` into `folder`; returns (HTML figures, [(name, reason)] of the
    unreadable files)."""
    from data.dataset import load_rgb
    from data.transforms import eval_transform, norm_stats
    from utils.evaluate.run_report import save_png
    from utils.panes import labelled_tile, unnormalize
    transform, cards, skipped, side = eval_transform(cfg, cfg.image_size), [], [], max(TILE, cfg.image_size)
    for start in range(0, len(paths), cfg.batch_size):
        batch, names = [], []
        for name, path in paths[start:start + cfg.batch_size]:
            try:
                batch.append(transform(load_rgb(path)))
                names.append(name)
            except (OSError, ValueError, SyntaxError) as e:
                skipped.append((name, f'{type(e).__name__}: {e}'))
        if not batch:
            continue
        images = torch.stack(batch).to(device)
        with torch.no_grad():
            probs = model(images).float().softmax(1).cpu().numpy()
        maps = class_maps(model, layer, images, probs.argmax(1))
        for k, (name, p, image) in enumerate(zip(names, probs, unnormalize(images, *norm_stats(cfg)))):
            top = np.argsort(-p, kind='stable')[:min(cfg.topk, len(classes))]
            file = f'{len(cards):04d}_{os.path.splitext(name)[0].replace(os.sep, "__").replace("/", "__")}.png'
            save_png(np.concatenate([labelled_tile(image, ['image'], side), labelled_tile(
                overlay(image, maps[k]), [f'Grad-CAM {classes[top[0]]}'], side)], axis=2), os.path.join(folder, file))
            cards.append(f'<figure><img src="{html.escape(file)}" alt=""><figcaption><b>{html.escape(name)}</b><br>'
                         + '<br>'.join(f'{html.escape(classes[j])}: {100 * p[j]:.1f} %' for j in top)
                         + '</figcaption></figure>')
    return cards, skipped
