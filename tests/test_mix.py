"""CutMix / Mixup on index-coded images: lam is the true share of original pixels."""
import pytest
import torch
from torch import nn

from data.mix import MixBatch, cutmix, mixed_criterion, mixup


def _index_coded(n, h=16, w=12):
    """Image i is filled with the value i, so every pixel tells which image it came from."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, h, w).contiguous()
    return x, torch.arange(n)


def test_cutmix_lam_equals_fraction_of_original_pixels():
    x, y = _index_coded(7)
    seen_partial = False
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        mixed, y_a, y_b, lam = cutmix(x, y, alpha=1.0, generator=g)
        assert mixed.shape == x.shape and torch.equal(y_a, y)
        assert torch.equal(x, _index_coded(7)[0]), "input must not be modified"
        for i in range(7):
            if y_b[i] == i:
                continue
            original = (mixed[i] == i).float().mean().item()
            assert original == pytest.approx(lam)
            # Every other pixel comes from the partner named by y_b.
            assert torch.all((mixed[i] == i) | (mixed[i] == y_b[i]))
            seen_partial |= 0 < lam < 1
    assert seen_partial


def test_mixup_blends_with_partner_and_odd_batch_works():
    x, y = _index_coded(7)
    g = torch.Generator().manual_seed(3)
    mixed, y_a, y_b, lam = mixup(x, y, alpha=0.2, generator=g)
    assert 0 <= lam <= 1 and mixed.shape == x.shape
    expected = lam * y.float() + (1 - lam) * y_b.float()
    assert torch.allclose(mixed[:, 0, 0, 0], expected)
    assert sorted(y_b.tolist()) == list(range(7))


def test_mix_is_reproducible_with_a_seeded_generator():
    x, y = _index_coded(5)
    a = cutmix(x, y, generator=torch.Generator().manual_seed(1))
    b = cutmix(x, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and a[3] == b[3]


def test_mixed_criterion_equals_hand_formula():
    output = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    y_a, y_b, lam = torch.tensor([0, 2]), torch.tensor([1, 0]), 0.3
    ce = nn.CrossEntropyLoss()
    hand = lam * ce(output, y_a).item() + (1 - lam) * ce(output, y_b).item()
    assert mixed_criterion(ce, output, y_a, y_b, lam).item() == pytest.approx(hand)


def test_mixbatch_with_zero_probabilities_returns_input_unchanged():
    x, y = _index_coded(7)
    out, y_a, y_b, lam = MixBatch()(x, y)
    assert out is x and y_a is y and y_b is y and lam == 1.0


def test_mixbatch_always_cutmix_and_always_mixup_on_odd_batch():
    x, y = _index_coded(7)
    g = torch.Generator().manual_seed(0)
    out, _, y_b, lam = MixBatch(cutmix_prob=1.0, generator=g)(x, y)
    # CutMix leaves only whole-number pixel values; Mixup blends them.
    assert torch.equal(out, out.round()) and out.shape == x.shape
    out, _, y_b, lam = MixBatch(mixup_prob=1.0, generator=g)(x, y)
    assert torch.allclose(out[:, 0, 0, 0], lam * y.float() + (1 - lam) * y_b.float())


def test_mixbatch_rejects_probabilities_summing_over_one():
    with pytest.raises(ValueError, match='<= 1'):
        MixBatch(cutmix_prob=0.7, mixup_prob=0.5)
