"""Ranger: Lookahead sync, gradient centralisation, convergence and exact resume."""
import torch
from torch import nn

from third_party.ranger import Ranger, radam_step_size


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def _batch(step):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(4, 1, 6, 6, generator=g), torch.randint(0, 2, (4,), generator=g)


def _train(model, optimizer, steps, start=0):
    for step in range(start, start + steps):
        x, y = _batch(step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _optimizer(model):
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    return Ranger([{'params': decay, 'weight_decay': 1e-2},
                   {'params': no_decay, 'weight_decay': 0}], lr=1e-2)


def test_slow_weights_change_only_every_k_steps_and_fast_weights_reset_at_sync():
    model = _tiny_model()
    optimizer = Ranger(model.parameters(), lr=1e-2, k=3, alpha=0.5)
    weight = model[0].weight
    start = weight.detach().clone()
    for step in range(1, 7):
        before_fast = weight.detach().clone()
        _train(model, optimizer, 1, start=step)
        slow = optimizer.state[weight]['slow_buffer']
        if step % 3:
            assert torch.equal(slow, start), f"slow weights moved at step {step}"
            assert not torch.equal(weight, before_fast)
        else:
            assert not torch.equal(slow, start), f"slow weights did not move at step {step}"
            assert torch.equal(weight.detach(), slow)
            start = slow.clone()


def test_lookahead_sync_interpolates_slow_towards_fast_by_alpha():
    p = nn.Parameter(torch.zeros(3))
    optimizer = Ranger([p], lr=0.1, k=2, alpha=0.25, use_gc=False)
    for _ in range(2):
        p.grad = torch.ones(3)
        optimizer.step()
    # Both steps are before RAdam's rectification (sma < 5): plain bias-corrected momentum.
    b1 = 0.95
    m1, m2 = (1 - b1), (1 - b1) * b1 + (1 - b1)
    fast = -0.1 * (m1 * radam_step_size(1, b1, 0.999)[0] + m2 * radam_step_size(2, b1, 0.999)[0])
    assert torch.allclose(p.detach(), torch.full((3,), 0.25 * fast))


def test_gradient_centralisation_makes_conv_grad_zero_mean_per_output_channel():
    conv = nn.Conv2d(2, 4, 3)
    optimizer = Ranger(conv.parameters(), lr=1.0, k=100, betas=(0.0, 0.999), use_gc=True)
    torch.manual_seed(1)
    conv.weight.grad = torch.randn_like(conv.weight) + 5.0
    conv.bias.grad = torch.randn_like(conv.bias) + 5.0
    optimizer.step()
    # With beta1 = 0 and no rectification at step 1, the update equals -lr * centred grad.
    update = optimizer.state[conv.weight]['exp_avg']
    assert torch.allclose(update.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5)
    assert update.abs().sum() > 0
    # 1-d parameters (bias) are left alone.
    assert torch.allclose(optimizer.state[conv.bias]['exp_avg'], conv.bias.grad)


def test_without_gc_and_sync_ranger_matches_torch_radam():
    torch.manual_seed(0)
    ours, ref = _tiny_model(), _tiny_model()
    opt_ours = Ranger(ours.parameters(), lr=1e-2, k=1000, use_gc=False, weight_decay=1e-2)
    opt_ref = torch.optim.RAdam(ref.parameters(), lr=1e-2, betas=(0.95, 0.999), eps=1e-5,
                                weight_decay=1e-2, decoupled_weight_decay=True)
    _train(ours, opt_ours, 12)
    _train(ref, opt_ref, 12)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_ranger_reduces_loss_on_small_regression():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0]) + 0.3
    # A hidden layer: GC keeps the weight sum of a single-output layer fixed.
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = Ranger(model.parameters(), lr=5e-2)
    loss_fn = nn.MSELoss()
    first = loss_fn(model(x).squeeze(1), y).item()
    for _ in range(200):
        optimizer.zero_grad()
        loss = loss_fn(model(x).squeeze(1), y)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 * first


def test_resumed_run_matches_uninterrupted_run_exactly(tmp_path):
    straight = _tiny_model()
    opt_straight = _optimizer(straight)
    _train(straight, opt_straight, 10)

    first = _tiny_model()
    opt_first = _optimizer(first)
    _train(first, opt_first, 5)
    path = tmp_path / 'ckpt.pth'
    torch.save({'model': first.state_dict(), 'optimizer': opt_first.state_dict()}, path)

    checkpoint = torch.load(path, weights_only=True)
    resumed = _tiny_model(seed=123)
    opt_resumed = _optimizer(resumed)
    resumed.load_state_dict(checkpoint['model'])
    opt_resumed.load_state_dict(checkpoint['optimizer'])
    _train(resumed, opt_resumed, 5, start=5)

    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    state = opt_resumed.state[resumed[0].weight]
    assert state['step'] == 10 and isinstance(state['step'], int)
    assert opt_resumed.param_groups[1]['weight_decay'] == 0


def test_bad_settings_raise_value_error():
    import pytest
    with pytest.raises(ValueError, match='alpha'):
        Ranger([nn.Parameter(torch.zeros(1))], alpha=1.5)
    with pytest.raises(ValueError, match='k must'):
        Ranger([nn.Parameter(torch.zeros(1))], k=0)
