"""The pieces of the dashboard windows that need no server."""
import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from data.transforms import IMAGENET_MEAN, IMAGENET_STD
from utils.panes import eta, labelled_tile, unnormalize, worst_misclassified


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
