"""The pieces of the dashboard windows that need no server."""
import base64
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import config
from conftest import plan_for, write_class_folders
from data import loaders
from data.transforms import IMAGENET_MEAN, IMAGENET_STD
from data.cache import finish_batch
from utils.dashboard.server import free_port
from utils.dashboard.windows import WIN, RunDashboard, eta, labelled_tile, unnormalize, worst_misclassified
from utils.dashboard.replay import read_log


def test_unnormalize_gives_back_the_pixels_before_normalize():
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    normalised = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(Image.fromarray(pixels))
    np.testing.assert_array_equal(unnormalize(normalised[None])[0].transpose(1, 2, 0), pixels)


def test_worst_misclassified_are_the_wrong_ones_lowest_true_probability_first():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55], [0.3, 0.7]])
    targets = np.array([1, 1, 1, 0, 1])
    assert worst_misclassified(probs, targets).tolist() == [0, 2, 3]
    assert worst_misclassified(probs, targets, k=1).tolist() == [0]


def test_labelled_tile_adds_a_text_strip_under_the_resized_image():
    tile = labelled_tile(np.zeros((3, 32, 32), dtype=np.uint8), ['true 3', 'pred 5 0.91'], side=96)
    assert tile.shape == (3, 96 + 2 * 12 + 2, 96)
    strip = tile[:, 96:]
    assert (strip == 255).mean() > 0.5 and (strip < 128).any()  # white strip with dark text


def test_eta_formats_hours_minutes_seconds():
    assert eta(3725.4) == '1:02:05' and eta(0) == '0:00:00'


def sent_images(run_dir):
    """{window: decoded image} of the image windows recorded in run_dir/visdom.log (the last call of each)."""
    sent = {}
    for _, msg in read_log(os.path.join(run_dir, 'visdom.log')):
        content = msg['data'][0] if msg.get('data') else {}
        if content.get('type') == 'image':
            src = content['content']['src']
            sent[msg['win']] = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1]))))
    return sent


@pytest.fixture
def cached_and_streamed(tmp_path, capsys):
    """The first training batch and the worst-misclassified validation images sent to the dashboard by a run
    with --cache=ram and by one without, on the same images with the training set's own normalisation."""
    write_class_folders(tmp_path / 'train', ['a', 'b', 'c'], 6, seed=0)
    write_class_folders(tmp_path / 'val', ['a', 'b', 'c'], 3, seed=1)
    sent = {}
    for cache in ('none', 'ram'):
        cfg = plan_for(train_data_root=str(tmp_path / 'train'), val_data_root=str(tmp_path / 'val'), cache=cache,
                       image_size=32, augment='none', jitter=0, erasing=0, batch_size=8, num_workers=0,
                       vis_port=free_port(), normalize='dataset')
        train_set, val_set = loaders.build_train_val(cfg)
        run_dir = str(tmp_path / cache)
        os.makedirs(run_dir)
        vis = RunDashboard(cfg, run_dir, train_set.classes)  # no server: the windows are recorded in visdom.log
        images, labels, _ = next(iter(loaders.eval_loader(train_set, cfg)))
        vis.show_batch(finish_batch(images, torch.device('cpu'), cfg, True), labels)
        targets = np.asarray(val_set.targets)
        probs = np.full((len(targets), 3), 0.1)
        probs[np.arange(len(targets)), (targets + 1) % 3] = 0.8  # every image wrong
        vis.show_worst(probs, targets, val_set, {}, 1)
        sent[cache] = sent_images(run_dir)
    capsys.readouterr()
    return sent


def test_dashboard_images_with_the_ram_cache_equal_those_without(cached_and_streamed):
    streamed, cached = cached_and_streamed['none'], cached_and_streamed['ram']
    for win in (WIN['batch'], WIN['worst']):
        np.testing.assert_array_equal(cached[win], streamed[win], err_msg=win)
        # dark noise with one bright square per image, not white tiles
        assert cached[win].max() >= 225 and np.median(cached[win]) < 80, win
