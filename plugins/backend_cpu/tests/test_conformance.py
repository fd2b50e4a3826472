"""The numba backend against the numpy reference: the shared conformance suite, then random
shapes with odd sizes, long inputs and the fast paths' edges (BLAS vs few-token kernels, tiles)."""

import numpy as np
import pytest

from gllm_core.testing import conformance_cases

from gllm_backend_cpu.backend import NumbaBackend


@pytest.fixture(scope="module")
def cpu():
    return NumbaBackend()


@pytest.mark.parametrize("case", conformance_cases(), ids=str)
def test_conformance(case, cpu):
    case.check(cpu)
