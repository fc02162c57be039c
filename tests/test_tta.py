import pytest
import torch
import torch.nn as nn
import ttach as tta

from utils.evaluate.tta import MERGES, TTA_NAMES, TTAModel, build_tta


def tiny_net(n_classes=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, n_classes)).eval()


@pytest.fixture
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_identity_only_compose_equals_no_tta(x):
    model = tiny_net()
    identity = tta.Compose([tta.Rotate90(angles=[0])])
    assert len(identity) == 1
    with torch.no_grad():
        assert torch.allclose(TTAModel(model, identity)(x), TTAModel(model, None)(x))
        assert torch.allclose(TTAModel(model, None)(x), model(x).softmax(1))


def test_hflip_is_the_mean_of_softmax_of_both_views(x):
    model = tiny_net()
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
        got = TTAModel(model, build_tta("hflip", 32))(x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_gmean_is_the_renormalised_geometric_mean_of_probabilities(x):
    model = tiny_net()
    with torch.no_grad():
        g = (model(x).softmax(1) * model(x.flip(2)).softmax(1)).sqrt()
        got = TTAModel(model, build_tta("vflip", 32), merge="gmean")(x)
    assert torch.allclose(got, g / g.sum(1, keepdim=True), atol=1e-6)


@pytest.mark.parametrize("name", TTA_NAMES)
def test_every_named_tta_returns_probability_rows(name, x):
    model = tiny_net()
    views = {"none": 1, "hflip": 2, "vflip": 2, "d4": 8, "five_crop": 5, "ten_crop": 10, "multiscale": 3}
    transforms = build_tta(name, 32)
    assert (1 if transforms is None else len(transforms)) == views[name]
    with torch.no_grad():
        probs = TTAModel(model, transforms)(x)
    assert probs.shape == (2, 4)
    assert (probs >= 0).all() and torch.allclose(probs.sum(1), torch.ones(2))


def test_crops_are_resized_back_to_image_size():
    seen = []
    model = tiny_net()
    record = nn.Sequential()
    record.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[2:])))
    with torch.no_grad():
        TTAModel(nn.Sequential(record, model), build_tta("ten_crop", 32))(torch.randn(1, 3, 32, 32))
    assert seen == [(32, 32)] * 10


@pytest.mark.parametrize("merge", MERGES)
def test_every_merge_gives_finite_probability_rows(merge, x):
    model = tiny_net()
    with torch.no_grad():
        probs = TTAModel(model, build_tta("d4", 32), merge=merge)(x * 100)  # large logits
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(1), torch.ones(2))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="none, hflip, vflip, d4, five_crop, ten_crop, multiscale"):
        build_tta("flip", 32)
    with pytest.raises(ValueError, match="mean, gmean, max, tsharpen"):
        TTAModel(tiny_net(), None, merge="sum")
