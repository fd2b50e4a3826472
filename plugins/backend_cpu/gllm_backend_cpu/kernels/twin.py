"""Kernels compiled twice from one source: parallel over numba's thread pool, and serial.

Starting a parallel region (waking the pool, handing out the work, joining) costs tens of
microseconds, far more than a decode step's small ops take on one core (a norm, a rope or a copy
of a few rows: a microsecond or two). The backend calls a kernel's ``serial`` twin below a size
measured per op, and the parallel one above it. In the serial twin ``prange`` is a plain ``range``.
"""

from __future__ import annotations

import types

import numba


def twins(**options):
    """Decorator: ``numba.njit(parallel=True, **options)`` of the function, with the same source
    compiled ``parallel=False`` as its ``.serial`` attribute."""

    def build(fn):
        parallel = numba.njit(parallel=True, **options)(fn)
        copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        # numba's on-disk cache names a kernel by its qualified name, not by its options: the
        # serial twin needs a name of its own or it would load the parallel build (and back)
        copy.__qualname__ = fn.__qualname__ + "_serial"
        copy.__module__, copy.__doc__ = fn.__module__, fn.__doc__
        parallel.serial = numba.njit(parallel=False, **options)(copy)
        return parallel

    return build
