"""Test-wide set-up: one BLAS thread (numpy's OpenBLAS is far slower with two on
small problems here), one torch intra-op thread, and a root seed that can be swept
via LEMMATA_TEST_SEED."""

import os
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

threadpool_limits(limits=1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Two intra-op threads on a shared 2-core machine make tiny torch ops ~30x
    # slower (OpenMP barriers); the experiments also use one thread. Only for
    # tests whose module imported torch, so torch-free tests stay torch-free.
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("LEMMATA_TEST_SEED", "0"))


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)
