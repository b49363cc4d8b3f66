"""Worker processes of test_ddp.py (a module of its own, so that processes
started by torch.multiprocessing.spawn can import it)."""

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lemmata.optim import PGD

STEPS = 5
GLOBAL_BATCH = 16
LR = 0.05
P = 3.0


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(GLOBAL_BATCH, 6, generator=generator, dtype=torch.float64),
            torch.randn(GLOBAL_BATCH, 3, generator=generator, dtype=torch.float64),
        )
        for _ in range(STEPS)
    ]


def train(net: nn.Module, parts: int = 1, rank: int = 0) -> None:
    optimizer = PGD(net.parameters(), lr=LR, p=P)
    shard = GLOBAL_BATCH // parts
    for x, y in batches():
        rows = slice(rank * shard, (rank + 1) * shard)
        optimizer.zero_grad()
        nn.functional.mse_loss(net(x[rows]), y[rows]).backward()
        optimizer.step()


def run(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One DDP rank: train on its shard of each global batch, save the weights."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        net = DistributedDataParallel(model(), gradient_as_bucket_view=True)
        train(net, parts=world_size, rank=rank)
        weights = [w.detach().clone() for w in net.module.parameters()]
        torch.save(weights, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks done talking before either tears gloo down: without it a
        # rank that exits first can abort the other ("terminate called without
        # an active exception", seen once in CI).
        dist.barrier()
    finally:
        dist.destroy_process_group()
