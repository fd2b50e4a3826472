"""Helpers shared by the OpenCL backend's tests."""

import pytest


class _Counted:
    """A kernel launcher that counts its launches (``calls``)."""

    def __init__(self, k):
        self.k, self.calls = k, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        return self.k(*a, **kw)


@pytest.fixture
def count_rope_store():
    """``count_rope_store(backend)`` wraps the backend's ``rope_store`` kernel and returns the counter."""
    def wrap(b):
        b._k_rope_store = counted = _Counted(b._k_rope_store)
        return counted
    return wrap
