import pytest
import torch
from torch import nn

from transferability.models import (
    NetConfig,
    build,
    copy_layers,
    load_checkpoint,
    save_checkpoint,
)


def params(m):
    return sum(p.numel() for p in m.parameters())


def test_cifar5_is_3_conv_2_fc_about_0_9m_parameters_mostly_fc():
    m = build(NetConfig("cifar5", 5), 0)
    assert isinstance(m.layers, nn.ModuleList) and m.num_layers == 5
    kinds = [
        type(next(c for c in layer if isinstance(c, nn.Conv2d | nn.Linear))) for layer in m.layers
    ]
    assert kinds == [nn.Conv2d] * 3 + [nn.Linear] * 2
    assert 0.8e6 < params(m) < 1.0e6
    fc = sum(p.numel() for layer in m.layers[3:] for p in layer.parameters())
    assert fc / params(m) > 0.8


def test_alexnet8_has_the_papers_depth_and_width_scales():
    m = build(NetConfig("alexnet8", 5), 0)
    assert m.num_layers == 8
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    half = build(NetConfig("alexnet8", 5, width=0.5), 0)
    assert params(half) < params(m) / 3


def test_same_seed_same_weights():
    a, b = build(NetConfig("cifar5", 5), 7), build(NetConfig("cifar5", 5), 7)
    c = build(NetConfig("cifar5", 5), 8)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a.layers[0][0].weight, c.layers[0][0].weight)


def test_checkpoint_carries_what_rebuilds_the_network(tmp_path):
    m = build(NetConfig("cifar5", 4, width=0.5, dropout=0.1), 3)
    save_checkpoint(tmp_path / "m.pt", m, {"classes": ["a", "b", "c", "d"], "seed": 3})
    m2, meta = load_checkpoint(tmp_path / "m.pt")
    assert m2.cfg == m.cfg and meta["seed"] == 3
    x = torch.randn(2, 3, 32, 32)
    m.eval(), m2.eval()
    assert torch.equal(m(x), m2(x))
    assert not list(tmp_path.glob(".*.tmp"))


def test_copying_into_another_architecture_is_a_clear_error():
    src = build(NetConfig("cifar5", 5), 0)
    with pytest.raises(ValueError, match=r"src\.pt is cifar5.*into alexnet8"):
        copy_layers(build(NetConfig("alexnet8", 5), 0), src, 2, src_name="src.pt")
    with pytest.raises(ValueError, match="width"):
        copy_layers(build(NetConfig("cifar5", 5, width=2), 0), src, 2)
    with pytest.raises(ValueError, match="out of range"):
        copy_layers(build(NetConfig("cifar5", 5), 1), src, 5)


def test_damaged_checkpoint_is_an_error_naming_it(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match=r"none\.pt"):
        load_checkpoint(tmp_path / "none.pt")


def test_init_schemes_differ_in_scale_and_are_reproducible():
    """he: sqrt(2/fan_in); gaussian: the original's N(0, 0.01); torch: PyTorch's default."""
    stds = {}
    for scheme in ("he", "torch", "gaussian"):
        a, b = (build(NetConfig("cifar5", 5, init=scheme), 3) for _ in range(2))
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
        fc = a.layers[3][1]  # 128 * 4 * 4 = 2048 inputs
        assert not fc.bias.any()
        stds[scheme] = fc.weight.std().item()
    assert stds["he"] == pytest.approx((2 / 2048) ** 0.5, rel=0.02)
    assert stds["gaussian"] == pytest.approx(0.01, rel=0.02)
    assert stds["torch"] == pytest.approx((1 / 3 / 2048) ** 0.5, rel=0.02)  # U(±1/sqrt(fan_in))
    with pytest.raises(ValueError, match=r"model\.init"):
        build(NetConfig("cifar5", 5, init="xavier"), 0)


def test_pooling_before_relu_changes_nothing_bit_for_bit():
    """Pooled conv layers pool first (cheaper); the textbook order gives identical numbers."""
    m = build(NetConfig("cifar5", 5, dropout=0.0), 0)
    textbook = build(NetConfig("cifar5", 5, dropout=0.0), 0)
    for layer in textbook.layers[:3]:
        _, pool, relu = layer
        assert isinstance(pool, nn.MaxPool2d) and isinstance(relu, nn.ReLU)
        layer[1], layer[2] = relu, pool
    # windows that are all negative: after a ReLU they tie at zero
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    outs, grads = [], []
    for net in (m, textbook):
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        out.square().sum().backward()
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in net.parameters()])
    assert torch.equal(outs[0], outs[1])
    pooled = m.layers[0][:2](x)  # conv, then pool
    assert (pooled < 0).any() and (pooled > 0).any()  # both kinds of window occurred
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
