"""How many threads the kernels use, and keeping numba's and BLAS's threads off each other's cores.

The backend calls BLAS (numpy's matmul) and numba parallel regions one after the other, never at
the same time, and caps both pools at the same count, so at most ``threads`` cores are busy.
numba's count is per calling thread, so the backend re-applies it when a new thread calls it.
"""

from __future__ import annotations

import ctypes
import os

from gllm_core.errors import BackendUnavailableError

ENV = "GLLM_NUM_THREADS"

# thread-count setters of the BLAS libraries numpy ships with or links against
_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads", "MKL_Set_Num_Threads")
_BLAS_NAMES = ("openblas", "mkl_rt")


def prefer_passive_waits() -> None:
    """Idle OpenMP threads sleep instead of spinning, unless the user chose otherwise.

    numba's OpenMP pool spins between parallel regions by default; on a machine whose cores are
    shared (other processes, or an application's own threads) the spinning threads take the
    cores the working ones need (measured here: 15-18 vs 26-28 sentences/s on a loaded 2-core
    machine). Takes effect when OpenMP loads, i.e. before numba's first parallel region."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def requested_threads(threads: int | None = None) -> int:
    """``threads`` if given, else ``GLLM_NUM_THREADS``, else every core this process may use."""
    if threads is None:
        raw = os.environ.get(ENV, "").strip()
        if not raw:
            return available_cores()
        try:
            threads = int(raw)
        except ValueError:
            raise BackendUnavailableError(f"{ENV}={raw!r} is not a whole number of threads") from None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise BackendUnavailableError(f"threads must be a positive whole number, got {threads!r}")
    return threads


def _loaded_blas_paths() -> list[str]:
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip().split(" ")[-1]
                if path.startswith("/") and any(n in os.path.basename(path).lower() for n in _BLAS_NAMES):
                    if path not in paths:
                        paths.append(path)
    except OSError:  # not Linux: nothing found, BLAS keeps its own setting
        pass
    return paths


_BLAS_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                 "openblas_get_num_threads64_", "openblas_get_num_threads", "MKL_Get_Max_Threads")


def blas_threads() -> int | None:
    """The thread count of numpy's BLAS (OpenBLAS or MKL), when it can be asked."""
    import numpy  # noqa: F401

    for path in _loaded_blas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_GETTERS:
            getter = getattr(lib, name, None)
            if getter is not None:
                getter.restype = ctypes.c_int
                return int(getter())
    return None


def set_blas_threads(threads: int) -> list[str]:
    """Cap the BLAS numpy uses at ``threads``; returns the libraries that were capped."""
    import numpy  # noqa: F401  (makes sure numpy's BLAS is loaded)

    capped = []
    for path in _loaded_blas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter.restype = None
                setter(int(threads))
                capped.append(f"{os.path.basename(path)}:{name}")
                break
    return capped
