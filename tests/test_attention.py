"""SE / CBAM modules and their insertion into torchvision ResNets."""
import copy
import pickle

import pytest
import torch
from torchvision.models import resnet18, resnet34, resnet50

from models.layers.attention import CBAM, SE, ChannelAttention, SpatialAttention, add_attention


@pytest.mark.parametrize('channels', [1, 3, 64])
def test_attention_modules_keep_shape_and_maps_are_in_unit_interval(channels):
    x = torch.randn(2, channels, 9, 7)
    cbam, se = CBAM(channels), SE(channels)
    assert cbam(x).shape == x.shape and se(x).shape == x.shape
    assert cbam.last_channel_map.shape == (2, channels, 1, 1)
    assert cbam.last_spatial_map.shape == (2, 1, 9, 7)
    for m in (cbam.last_channel_map, cbam.last_spatial_map, se.last_channel_map,
              ChannelAttention(channels)(x), SpatialAttention()(x)):
        assert m.min() >= 0 and m.max() <= 1


def test_cbam_output_is_input_times_channel_then_spatial_map():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 5)
    cbam = CBAM(8, ratio=4)
    expected = x * cbam.channel(x)
    expected = expected * cbam.spatial(expected)
    assert torch.allclose(cbam(x), expected)


def test_spatial_attention_pools_channel_mean_and_max():
    sa = SpatialAttention(kernel_size=1)
    with torch.no_grad():
        sa.conv.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
    x = torch.randn(1, 4, 3, 3)
    assert torch.allclose(sa(x), torch.sigmoid(x.mean(dim=1, keepdim=True)))


@pytest.mark.parametrize('builder,blocks', [(resnet18, 8), (resnet34, 16), (resnet50, 16)])
@pytest.mark.parametrize('kind', ['se', 'cbam'])
def test_add_attention_puts_one_module_in_every_block(builder, blocks, kind):
    model = add_attention(builder(weights=None, num_classes=62), kind)
    attention = [m for m in model.modules() if isinstance(m, (SE, CBAM))]
    assert len(attention) == blocks
    model.eval()
    for size in (32, 64):
        assert model(torch.randn(2, 3, size, size)).shape == (2, 62)
    # The hook really runs: every module saw this forward pass.
    assert all(m.last_channel_map is not None and m.last_channel_map.shape[0] == 2 for m in attention)


def test_attention_sits_on_residual_branch_before_identity():
    model = add_attention(resnet18(weights=None, num_classes=62), 'se').eval()
    block = model.layer1[0]
    x = torch.randn(1, 64, 8, 8)
    branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    assert torch.allclose(block(x), torch.relu(branch + x), atol=1e-6)
    # Zeroing the gates (bias -> -inf) leaves only the identity path.
    with torch.no_grad():
        block.attention.fc[2].bias.fill_(-1e4)
    assert torch.allclose(block(x), torch.relu(x))


def test_plain_resnet_weights_load_into_attention_model_with_only_attention_keys_missing():
    plain = resnet34(weights=None, num_classes=62)
    model = add_attention(resnet34(weights=None, num_classes=62), 'cbam')
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all('.attention.' in k for k in result.missing_keys)
    assert torch.equal(model.conv1.weight, plain.conv1.weight)


def test_attention_model_can_be_copied_and_pickled():
    model = add_attention(resnet18(weights=None, num_classes=4), 'cbam').eval()
    x = torch.randn(1, 3, 32, 32)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert torch.allclose(clone(x), model(x))
        assert clone.layer1[0].attention.last_channel_map is not None


def test_none_leaves_model_unchanged_and_unknown_kind_names_valid_ones():
    model = resnet18(weights=None, num_classes=4)
    keys = list(model.state_dict())
    assert list(add_attention(model, 'none').state_dict()) == keys
    with pytest.raises(ValueError, match='none, se, cbam'):
        add_attention(model, 'eca')
