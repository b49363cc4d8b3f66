"""PGD under DistributedDataParallel (gloo, 2 CPU processes) gives the weights
of one process on the same global batch."""

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_matches_one_process(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    sys.modules.pop("_ddp_worker", None)
    import _ddp_worker

    mp.spawn(_ddp_worker.run, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)

    single = _ddp_worker.model()
    _ddp_worker.train(single)
    expected = [w.detach() for w in single.parameters()]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for w0, w1, w in zip(*ranks, expected, strict=True):
        assert torch.equal(w0, w1)  # the ranks stay in lockstep
        # All-reduce averages two half-batch gradients: rounding differences only.
        torch.testing.assert_close(w0, w, rtol=1e-12, atol=1e-14)
    assert not torch.equal(expected[0], _ddp_worker.model()[0].weight.detach())
