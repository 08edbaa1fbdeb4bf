"""What each treatment copies, freezes and trains, checked weight by weight after training."""

import pytest
import torch

from transferability.networks import Job, Networks, base_job, plan
from transferability.runner import run_study
from transferability.train import optimizer_for


def layer_equal(a, b, i):
    sa, sb = a.layers[i].state_dict(), b.layers[i].state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def trained(tiny_study, tmp_path):
    cfg, splits, ds = tiny_study
    run_study(cfg, splits, ds, tmp_path / "runs.csv", which="bases", log=lambda *_: None)
    return Networks(cfg, splits, ds)


def train_job(networks, job):
    networks.run(job)
    from transferability.models import load_checkpoint

    return load_checkpoint(networks.checkpoint(job))[0]


def job(treatment, n=3, direction="A->B"):
    s, t = direction.split("->")
    return Job("random0", "random", 0, direction, s, t, treatment, n)


@pytest.mark.parametrize("treatment, source", [("BnB", "B"), ("AnB", "A")])
def test_frozen_layers_stay_bitwise_equal_to_the_source(trained, treatment, source):
    from transferability.models import load_checkpoint

    src, _ = load_checkpoint(trained.checkpoint(base_job("random0", "random", 0, source)))
    net = train_job(trained, job(treatment))
    for i in range(3):
        assert layer_equal(net, src, i), f"frozen layer {i} changed"
    for i in range(3, 5):
        assert not layer_equal(net, src, i), f"layer {i} above the cut equals the source"


@pytest.mark.parametrize("treatment, source", [("BnB+", "B"), ("AnB+", "A")])
def test_fine_tuned_layers_change(trained, treatment, source):
    from transferability.models import load_checkpoint

    src, _ = load_checkpoint(trained.checkpoint(base_job("random0", "random", 0, source)))
    before, _ = trained.build(job(treatment))
    for i in range(3):  # copied ...
        assert layer_equal(before, src, i)
    net = train_job(trained, job(treatment))
    for i in range(5):  # ... and then trained, like the fresh layers above
        assert not layer_equal(net, src, i), f"layer {i} did not change"


def test_layers_above_the_cut_start_fresh(trained):
    from transferability.models import load_checkpoint

    src, _ = load_checkpoint(trained.checkpoint(base_job("random0", "random", 0, "A")))
    net, _ = trained.build(job("AnB", n=2))
    for i in range(2, 5):
        assert not layer_equal(net, src, i)


def test_transfers_share_one_fresh_draw_that_is_not_the_bases_own(trained):
    """The layers a transfer does not copy come from one draw per (block, target task), shared
    by every treatment (paired gaps), and different from the base's own initial weights."""
    from transferability.models import build
    from transferability.networks import derive_seed

    base_init = build(trained.net_config(5), derive_seed("init", "random0", 0, "B"))
    nets = {t: trained.build(job(t, n=2))[0] for t in ("BnB", "AnB+", "RnB")}
    for i in range(2, 5):
        assert layer_equal(nets["BnB"], nets["AnB+"], i) and layer_equal(
            nets["BnB"], nets["RnB"], i
        )
        assert not layer_equal(nets["BnB"], base_init, i)
    assert not layer_equal(nets["RnB"], base_init, 0)  # random frozen layers: the fresh draw


def test_random_control_is_frozen_at_its_initialisation(trained):
    j = job("RnB", n=2)
    init, _ = trained.build(j)
    net = train_job(trained, j)
    assert layer_equal(net, init, 0) and layer_equal(net, init, 1)
    assert not layer_equal(net, init, 2)


def test_frozen_layers_are_left_out_of_the_optimizer(trained):
    net, _ = trained.build(job("AnB", n=3))
    opt = optimizer_for(net, trained.cfg.train)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    frozen = {id(p) for layer in net.layers[:3] for p in layer.parameters()}
    assert not in_opt & frozen
    assert in_opt == {id(p) for layer in net.layers[3:] for p in layer.parameters()}
    # biases carry no weight decay; weights do
    decay = {g["weight_decay"] for g in opt.param_groups}
    assert decay == {trained.cfg.train.weight_decay, 0.0}


def test_plan_names_every_network_as_in_the_paper(tiny_cfg):
    from transferability.splits import random_split

    from .factories import CLASSES

    names = [j.name for j in plan(tiny_cfg, [random_split(CLASSES, 0)])]
    assert names[:2] == ["baseA", "baseB"]
    assert {"B1B", "B1B+", "A1B", "A1B+", "R1B", "A3A", "A3A+", "B3A", "B3A+", "R3A"} <= set(names)
    assert len(names) == 2 + 2 * 2 * 5  # bases + directions x cuts x treatments
