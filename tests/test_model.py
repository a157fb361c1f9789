import pytest
import torch

from diffusion_utilities import BadInput, ContextUnet, EmbedFC, ResidualConvBlock, UnetDown, UnetUp


@pytest.mark.parametrize("batch", [1, 3, 32])
@pytest.mark.parametrize("height", [16, 28])
def test_contextunet_shapes(batch, height):
    torch.manual_seed(0)
    model = ContextUnet(3, n_feat=16, n_cfeat=5, height=height).eval()
    x = torch.randn(batch, 3, height, height)
    for t in (torch.rand(batch), torch.rand(batch, 1, 1, 1), torch.tensor([0.3])[:, None, None, None]):
        for c in (None, torch.rand(batch, 5)):
            assert model(x, t, c).shape == (batch, 3, height, height)


def test_block_shapes():
    x = torch.randn(2, 8, 16, 16)
    assert ResidualConvBlock(8, 16, is_res=True)(x).shape == (2, 16, 16, 16)
    assert UnetDown(8, 16)(x).shape == (2, 16, 8, 8)
    assert UnetUp(16, 4)(x, x).shape == (2, 4, 32, 32)
    assert EmbedFC(5, 12)(torch.rand(3, 5)).shape == (3, 12)
    assert EmbedFC(1, 12)(torch.rand(3, 1, 1, 1)).shape == (3, 12)


def test_shortcut_conv_is_registered_and_forward_is_deterministic():
    torch.manual_seed(0)
    model = ContextUnet(3, 16, 5, 16).eval()
    assert "init_conv.shortcut.weight" in model.state_dict()
    assert model.init_conv.shortcut.weight.shape == (16, 3, 1, 1)
    x, t = torch.randn(4, 3, 16, 16), torch.rand(4)
    torch.testing.assert_close(model(x, t), model(x, t), rtol=0, atol=0)
    # ...and it is trained: it receives a gradient.
    model.train()
    model(x, t).pow(2).mean().backward()
    assert model.init_conv.shortcut.weight.grad.abs().sum() > 0


def test_residual_sum_is_scaled_by_sqrt2():
    block = ResidualConvBlock(4, 4, is_res=True).eval()
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(block(x), (x + block.conv2(block.conv1(x))) / 2**0.5)


def test_pooling_follows_height():
    assert ContextUnet(3, 16, 5, 28).to_vec[0].kernel_size == 7
    assert ContextUnet(3, 16, 5, 16).to_vec[0].kernel_size == 4


def test_context_changes_the_output():
    torch.manual_seed(0)
    model = ContextUnet(3, 16, 5, 16).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    assert not torch.allclose(model(x, t, torch.eye(5)[:2]), model(x, t))


@pytest.mark.parametrize(
    "x, c, message",
    [
        (torch.randn(2, 3, 12, 12), None, r"\(B, 3, 16, 16\)"),
        (torch.randn(2, 1, 16, 16), None, r"\(B, 3, 16, 16\)"),
        (torch.randn(2, 3, 16, 16), torch.rand(2, 4), "n_cfeat=5"),
    ],
)
def test_bad_shapes_raise_one_line(x, c, message):
    model = ContextUnet(3, 16, 5, 16)
    with pytest.raises(BadInput, match=message) as e:
        model(x, torch.rand(2), c)
    assert "\n" not in str(e.value)


def test_height_must_be_multiple_of_4():
    with pytest.raises(BadInput, match="multiple of 4"):
        ContextUnet(3, 16, 5, 18)


def _with_trained_looking_batchnorm(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def test_inference_copy_folds_batchnorm_without_changing_outputs_or_the_model():
    from diffusion_utilities.engine import inference_copy

    torch.manual_seed(0)
    model = _with_trained_looking_batchnorm(ContextUnet(n_feat=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = inference_copy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x, t, c = torch.randn(6, 3, 16, 16), torch.rand(6), torch.rand(6, 5)
    with torch.no_grad():
        torch.testing.assert_close(fused(x, t, c), model(x, t, c), atol=1e-5, rtol=1e-4)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_inference_copy_leaves_a_training_mode_model_alone():
    from diffusion_utilities.engine import inference_copy

    model = ContextUnet(n_feat=16).train()
    assert inference_copy(model) is model


def test_cached_inference_copy_is_reused_until_the_weights_change():
    from diffusion_utilities.engine import cached_inference_copy

    torch.manual_seed(0)
    model = _with_trained_looking_batchnorm(ContextUnet(n_feat=16))
    x, t = torch.randn(4, 3, 16, 16), torch.rand(4)
    first = cached_inference_copy(model)
    assert cached_inference_copy(model) is first
    # An in-place change (what an optimiser step or load_state_dict does) must not be served stale.
    with torch.no_grad():
        model.out[-1].bias.add_(1.0)
    second = cached_inference_copy(model)
    assert second is not first
    with torch.no_grad():
        torch.testing.assert_close(second(x, t), model(x, t), atol=1e-5, rtol=1e-4)
    model.load_state_dict(_with_trained_looking_batchnorm(ContextUnet(n_feat=16)).state_dict())
    third = cached_inference_copy(model)
    assert third is not second
    with torch.no_grad():
        torch.testing.assert_close(third(x, t), model(x, t), atol=1e-5, rtol=1e-4)
    model.train()
    assert cached_inference_copy(model) is model
