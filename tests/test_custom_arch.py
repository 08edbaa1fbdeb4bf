"""Any network as a list of layers: `model.arch: package.module:function`.

A network from a module outside the package builds, transfers and trains; the residual example's
frozen batch norm stays bitwise equal to its source; a bad `model.arch` names the key."""

import sys

import pytest
import torch
from torch import nn

from transferability import config
from transferability.config import ConfigError
from transferability.models import NetConfig, build, copy_layers, load_checkpoint
from transferability.networks import Job, Networks, base_job
from transferability.runner import read_runs, run_study

RESNET = "transferability.resnet:layers"

# a user's network: conv + BN, conv, two FC layers; nothing from the package
USER_NETS = """
from torch import nn


def layers(num_classes, width=1.0, dropout=0.0, image_size=32):
    c = max(1, round(8 * width))
    return [
        nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(2 * c * (image_size // 4) ** 2, 32), nn.ReLU()),
        nn.Sequential(nn.Dropout(dropout), nn.Linear(32, num_classes)),
    ]


def one_layer(num_classes, **_):
    return [nn.Linear(3, num_classes)]


def not_modules(num_classes, **_):
    return ["conv", "fc"]


def broken(num_classes, **_):
    return 1 / 0


def positional_only(n):
    return []
"""


@pytest.fixture
def user_nets(tmp_path, monkeypatch):
    """`usernets`, a module in a folder of its own (not the package's) put on sys.path."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "usernets.py").write_text(USER_NETS)
    monkeypatch.syspath_prepend(str(folder))
    yield folder / "usernets.py"
    sys.modules.pop("usernets", None)


def with_settings(cfg, **sections):
    """`cfg` with some settings replaced, validated again."""
    raw = cfg.model_dump()
    for section, values in sections.items():
        raw[section] = raw[section] | values
    return config.validate(raw)


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def layer_equal(a, b, i):
    """Layer i of networks a and b: every parameter and buffer bitwise equal."""
    return same_state(a.layers[i].state_dict(), b.layers[i].state_dict())


def test_a_users_network_builds_transfers_and_trains(user_nets, tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = with_settings(cfg, model={"arch": "usernets:layers"}, study={"cuts": [1, 2]})
    assert (cfg.num_layers, cfg.cuts) == (4, [1, 2])
    net = build(NetConfig("usernets:layers", 5, 0.5), 0)
    assert net.num_layers == 4 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 5)

    networks = Networks(cfg, splits, ds)
    base = base_job("random0", "random", 0, "A")
    networks.run(base)
    src, _ = load_checkpoint(networks.checkpoint(base))  # rebuilt from the module by name
    assert src.cfg.arch == "usernets:layers"

    frozen = Job("random0", "random", 0, "A->B", "A", "B", "AnB", 2)
    model, _ = networks.build(frozen)
    assert model.frozen == 2 and all(layer_equal(model, src, i) for i in range(2))
    row, history = networks.run(frozen)
    trained, _ = load_checkpoint(networks.checkpoint(frozen))
    assert all(layer_equal(trained, src, i) for i in range(2))  # conv + BN, frozen
    assert not any(layer_equal(trained, src, i) for i in range(2, 4))  # trained
    assert row["arch"] == "usernets:layers" and len(history) == 1

    # the whole study runs on it, one row per network
    runs = tmp_path / "runs.csv"
    cfg = with_settings(cfg, study={"treatments": ["AnB", "AnB+"], "mlflow": False})
    run_study(cfg, splits, ds, runs, log=lambda *_: None)
    assert sorted(r["network"] for r in read_runs(runs)) == sorted(
        ["random0/s0/baseA", "random0/s0/baseB"]
        + [f"random0/s0/{s}{n}{t}{p}" for s, t in ("AB", "BA") for n in (1, 2) for p in ("", "+")]
    )


def test_a_custom_network_is_seeded_and_initialised_like_the_built_in_ones(user_nets):
    a, b = build(NetConfig("usernets:layers", 5), 3), build(NetConfig("usernets:layers", 5), 3)
    c = build(NetConfig("usernets:layers", 5), 4)
    assert same_state(a.state_dict(), b.state_dict())
    assert not torch.equal(a.layers[0][0].weight, c.layers[0][0].weight)
    gaussian = build(NetConfig("usernets:layers", 5, init="gaussian"), 3)
    conv = gaussian.layers[1][0]
    assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05) and not conv.bias.any()
    he = build(NetConfig("usernets:layers", 5, init="he"), 3)
    assert he.layers[1][0].weight.std().item() == pytest.approx((2 / 72) ** 0.5, rel=0.05)
    # counting its layers while validating settings leaves the global RNG alone
    state = torch.random.get_rng_state()
    config.load(None, ["model.arch=usernets:layers"])
    assert torch.equal(state, torch.random.get_rng_state())


def test_frozen_batch_norm_evaluates_and_the_rest_trains():
    net = build(NetConfig(RESNET, 5, 0.25, dropout=0.5), 0)
    norms = [[m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)] for layer in net.layers]
    drops = [m for m in net.layers[4].modules() if isinstance(m, nn.Dropout)]
    net.freeze(2)
    net.train()
    assert not any(m.training for layer in norms[:2] for m in layer)  # frozen: running stats
    assert all(m.training for layer in norms[2:] for m in layer)
    assert all(m.training for m in drops)
    net.eval()
    assert not any(m.training for layer in norms for m in layer)
    net.train()  # evaluate() switches back and forth
    assert not any(m.training for layer in norms[:2] for m in layer)
    assert all(m.training for layer in norms[2:] for m in layer)


@pytest.fixture
def resnet_bases(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    cfg = with_settings(cfg, model={"arch": RESNET}, study={"cuts": [2], "mlflow": False})
    run_study(cfg, splits, ds, tmp_path / "runs.csv", which="bases", log=lambda *_: None)
    return Networks(cfg, splits, ds)


def test_the_resnets_frozen_layers_stay_bitwise_equal_batch_norm_included(resnet_bases):
    networks = resnet_bases
    src, _ = load_checkpoint(networks.checkpoint(base_job("random0", "random", 0, "A")))
    assert src.layers[0][1].num_batches_tracked > 0  # the base trained its batch norm
    job = Job("random0", "random", 0, "A->B", "A", "B", "AnB", 2)
    networks.run(job)
    net, _ = load_checkpoint(networks.checkpoint(job))
    for i in range(2):  # stem and first stage: conv weights, BN weight, bias and statistics
        state, source = net.layers[i].state_dict(), src.layers[i].state_dict()
        assert any(k.endswith("running_var") for k in state)
        for k in state:
            assert torch.equal(state[k], source[k]), f"frozen layer {i}: {k} changed"
    for i in range(2, 5):
        assert not layer_equal(net, src, i), f"layer {i} above the cut did not train"


def test_the_resnets_fine_tuned_layers_train_their_batch_norm(resnet_bases):
    networks = resnet_bases
    src, _ = load_checkpoint(networks.checkpoint(base_job("random0", "random", 0, "A")))
    job = Job("random0", "random", 0, "A->B", "A", "B", "AnB+", 2)
    networks.run(job)
    net, _ = load_checkpoint(networks.checkpoint(job))
    bn, bn_src = net.layers[1].bn1, src.layers[1].bn1
    assert bn.num_batches_tracked > bn_src.num_batches_tracked
    assert not torch.equal(bn.running_mean, bn_src.running_mean)
    assert not torch.equal(bn.weight, bn_src.weight)


def test_the_resnet_copies_and_reloads_with_its_running_statistics(tmp_path):
    from transferability.models import save_checkpoint

    src = build(NetConfig(RESNET, 5, 0.25), 0)
    src.train()
    src(torch.randn(8, 3, 32, 32))  # running statistics away from their initial values
    dst = build(NetConfig(RESNET, 5, 0.25), 1)
    copy_layers(dst, src, 3)
    assert all(layer_equal(dst, src, i) for i in range(3)) and not layer_equal(dst, src, 3)
    save_checkpoint(tmp_path / "r.pt", src, {})
    back, _ = load_checkpoint(tmp_path / "r.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(src.eval()(x), back.eval()(x))
    big = build(NetConfig(RESNET, 3, 0.25, image_size=64), 0)  # the stem halves 64 px
    assert big(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_an_edited_network_gets_a_new_fingerprint(user_nets, tiny_study):
    cfg, splits, ds = tiny_study
    cfg = with_settings(cfg, model={"arch": "usernets:layers"}, study={"cuts": [1, 2]})
    job = base_job("random0", "random", 0, "A")
    before = Networks(cfg, splits, ds).fingerprint(job)
    user_nets.write_text(USER_NETS + "\n# edited\n")
    assert Networks(cfg, splits, ds).fingerprint(job) != before


@pytest.mark.parametrize(
    "arch, message",
    [
        ("usernets:one_layer", r"model\.arch: .*returned 1 layer\(s\); a network needs 2"),
        ("usernets:not_modules", r"model\.arch: .*must return a list of nn\.Module"),
        ("usernets:broken", r"model\.arch: .*does not build .*ZeroDivisionError"),
        ("usernets:positional_only", r"model\.arch: .*must accept the keyword arguments"),
        ("usernets:nothing", r"model\.arch: .*module 'usernets' has no 'nothing'"),
        ("usernets:USER", r"model\.arch: .*not a function"),
    ],
)
def test_a_bad_custom_network_is_an_error_naming_model_arch(user_nets, arch, message):
    user_nets.write_text(USER_NETS + "\nUSER = 'me'\n")
    with pytest.raises(ConfigError, match=message):
        config.load(None, [f"model.arch={arch}"])


def test_cuts_are_checked_against_a_custom_networks_layers(user_nets):
    with pytest.raises(ConfigError, match=r"study\.cuts: \[4\] out of range 1\.\.3"):
        config.load(None, ["model.arch=usernets:layers", "study.cuts=[4]"])
    with pytest.raises(ConfigError, match=r"beyond\.datasize_cuts: \[4\] out of range 1\.\.3"):
        config.load(None, ["model.arch=usernets:layers", "beyond.datasize_cuts=[4]"])
    assert config.load(None, ["model.arch=usernets:layers"]).cuts == [1, 2, 3]
