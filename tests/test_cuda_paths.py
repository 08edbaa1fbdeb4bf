"""What differs on CUDA, checked on the CPU: GPU assignment, the bf16 branch, a clear error."""

import pytest
import torch
import torch.nn.functional as F

from transferability.executors import gpu_of
from transferability.models import NetConfig, build
from transferability.train import autocast, resolve_device


def test_workers_share_gpus_round_robin():
    assert [gpu_of(w, 2) for w in range(8)] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert [gpu_of(w, 1) for w in range(3)] == [0, 0, 0]
    assert [gpu_of(w, 8) for w in range(8)] == list(range(8))
    with pytest.raises(ValueError):
        gpu_of(0, 0)


def test_the_bf16_autocast_branch_computes_the_same_network():
    """The branch CUDA takes, run on the CPU: bf16 logits agree with fp32 to bf16 precision,
    the loss stays float32 and a step on it lowers the loss."""
    torch.manual_seed(0)
    net = build(NetConfig("cifar5", 5, width=0.25, dropout=0.0), 0)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 5, (32,))
    cpu = torch.device("cpu")
    with autocast(cpu, "fp32"):
        ref = net(x)
    with autocast(cpu, "bf16"):
        low = net(x)
        loss = F.cross_entropy(low, y)
    assert ref.dtype == torch.float32 and low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), ref, atol=0.05 * ref.abs().max().item())
    assert loss.dtype == torch.float32
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(5):
        with autocast(cpu, "bf16"):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with autocast(cpu, "bf16"):
        assert F.cross_entropy(net(x), y) < F.cross_entropy(ref, y)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_cuda_on_a_machine_without_it_is_a_clear_error():
    with pytest.raises(ValueError, match=r"train\.device: 'cuda'.*CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
