"""Test-wide set-up: one BLAS thread (numpy's OpenBLAS is far slower with two on
small problems here) and a root seed that can be swept via LEMMATA_TEST_SEED."""

import os

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

threadpool_limits(limits=1)


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("LEMMATA_TEST_SEED", "0"))


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)
