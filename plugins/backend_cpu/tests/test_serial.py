"""Small work runs on the kernels' serial twins (kernels.twin), big work on the parallel ones:
both builds of every kernel give the same results on odd sizes, the whole conformance suite
passes with every op forced onto either, and a decode step's fused attention
(``kv_attention``: rope, KV-cache write, attention over cache rows in one kernel) matches the
same step composed of the separate ops."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gllm_core.errors import BadRequestError
from gllm_core.testing import conformance_cases

from gllm_backend_cpu import backend as cpu_backend
from gllm_backend_cpu.backend import NumbaBackend
from gllm_backend_cpu.kernels import attention as A
from gllm_backend_cpu.kernels import elementwise as E
from gllm_backend_cpu.kernels import linear as L
from gllm_backend_cpu.kernels import norms as N
from gllm_backend_cpu.kernels import rope as R
from gllm_backend_cpu.kernels.scalar import ACT_GELU, ACT_SILU


@pytest.fixture(scope="module")
def cpu():
    return NumbaBackend(threads=2)


def _f(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _both(kernel, outputs, *args):
    """Run the parallel kernel and its serial twin on fresh copies of ``outputs``; compare."""
    results = []
    for k in (kernel, kernel.serial):
        outs = [o.copy() for o in outputs]
        k(*args, *outs)
        results.append(outs)
    for p, s in zip(*results):
        np.testing.assert_allclose(s, p, rtol=1e-6, atol=1e-6)
    return results[0]


def test_twins_are_two_builds_with_their_own_cache_names():
    for kernel in (E.silu_mul, E.softmax_rows, N.rms_norm_rows, R.rope_rows, A.attention_blocks,
                   A.rope_store_attend):
        assert kernel.targetoptions["parallel"] and not kernel.serial.targetoptions["parallel"]
        assert kernel.serial.py_func.__qualname__ == kernel.py_func.__qualname__ + "_serial"


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 17), (37, 130), (129, 1)])
def test_row_kernels_serial_equals_parallel(rows, cols):
    rng = np.random.default_rng(rows * 1000 + cols)
    a, b = _f(rng, rows, cols), _f(rng, rows, cols)
    vec, col = _f(rng, cols), _f(rng, rows)
    out = np.zeros((rows, cols), np.float32)
    flat = np.zeros(rows * cols, np.float32)
    _both(E.add_flat, [flat], a.reshape(-1), b.reshape(-1))
    _both(E.mul_flat, [flat], a.reshape(-1), b.reshape(-1))
    _both(E.add_row_vector, [out], a, vec)
    _both(E.mul_row_vector, [out], a, vec)
    _both(E.mul_column, [out], a, col)
    for act in (ACT_GELU, ACT_SILU):
        _both(E.bias_activation, [out], a, vec, act)
    _both(E.silu_mul, [out], a, b)
    _both(E.softmax_rows, [out], a)
    k = min(cols, 3)
    _both(E.top_k_rows, [np.zeros((rows, k), np.float32), np.zeros((rows, k), np.int32)], a, k)
    ids = rng.integers(0, rows, size=2 * rows + 1).astype(np.int64)
    _both(E.gather_rows_f32, [np.zeros((ids.size, cols), np.float32)], a, ids)
    _both(E.gather_rows_16, [np.zeros((ids.size, cols), np.float32)], a.astype(np.float16).view(np.uint16), False, ids)
    offsets = np.array([0, cols // 3, cols], dtype=np.int64)
    _both(E.split_columns, [flat], a, offsets)
    dst = _f(rng, 2 * rows + 3, cols)
    rows_at = rng.permutation(dst.shape[0])[:rows].astype(np.int64)
    for accumulate in (False, True):
        for kernel in (E.scatter_rows, E.scatter_rows.serial):
            d = dst.copy()
            kernel(d, rows_at, a, accumulate)
            expect = dst.copy()
            expect[rows_at] = a + (dst[rows_at] if accumulate else 0)
            np.testing.assert_allclose(d, expect, rtol=1e-6)
    _both(N.layer_norm_rows, [out], a, b, vec, vec, 1e-5)
    _both(N.rms_norm_rows, [out, np.zeros_like(out)], a, b, vec, 1e-5)
    _both(N.rms_norm_rows, [out, np.zeros((0, 0), np.float32)], a, np.zeros((0, 0), np.float32), vec, 1e-5)


@pytest.mark.parametrize("tokens,cols,rows", [(1, 1, 1), (3, 37, 70), (16, 130, 33)])
def test_few_token_linear_serial_equals_parallel(tokens, cols, rows):
    rng = np.random.default_rng(tokens + cols)
    x, w, bias = _f(rng, tokens, cols), _f(rng, rows, cols), _f(rng, rows)
    out = np.zeros((tokens, rows), np.float32)
    for act in (0, ACT_SILU):
        _both(L.linear_few_f32, [out], x, w, bias, act)
        _both(L.linear_few_16, [out], x, w.astype(np.float16).view(np.uint16), False, bias, act)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_serial_equals_parallel(interleaved):
    rng = np.random.default_rng(3)
    x = _f(rng, 7, 3, 10)
    inv_freq = (1.0 / 10000 ** (np.arange(0, 6, 2) / 6)).astype(np.float32)
    positions = rng.integers(0, 4000, size=7).astype(np.int64)
    _both(R.rope_rows, [np.zeros_like(x)], x, positions, inv_freq, interleaved, 1.1)


@pytest.mark.parametrize("lengths_q,lengths_k,hq,hkv,d", [([1, 1, 2], [17, 130, 5], 6, 2, 12),
                                                          ([9, 3], [9, 40], 4, 4, 16), ([1], [300], 3, 1, 7)])
def test_attention_serial_equals_parallel(lengths_q, lengths_k, hq, hkv, d):
    rng = np.random.default_rng(sum(lengths_k))
    tq, tk = sum(lengths_q), sum(lengths_k)
    q, k, v = _f(rng, tq, hq, d), _f(rng, tk, hkv, d), _f(rng, tk, hkv, d)
    cu_q, cu_k = np.cumsum([0] + lengths_q), np.cumsum([0] + lengths_k)
    tasks = A.make_tasks(cu_q, hkv, hq // hkv)
    kt = np.empty((hkv, d, tk + A.NR), np.float32)
    A.transpose_keys(k, kt)
    no_rows = np.zeros(0, np.int64)
    out = np.zeros((tq, hq, d), np.float32)
    for window in (0, 4):
        tiled = _both(A.attention_blocks, [out], q, k, kt, v, no_rows, cu_q, cu_k, tasks, np.float32(0.3), True, window)
        # through a slot table into a shuffled cache (no transposed keys): the same numbers
        perm = rng.permutation(tk + 5)
        kc, vc = np.zeros((tk + 5, hkv, d), np.float32), np.zeros((tk + 5, hkv, d), np.float32)
        kc[perm[:tk]], vc[perm[:tk]] = k, v
        paged = _both(A.attention_blocks, [out], q, kc, np.empty((hkv, d, 0), np.float32), vc,
                      perm[:tk].astype(np.int64), cu_q, cu_k, tasks, np.float32(0.3), True, window)
        np.testing.assert_allclose(paged[0], tiled[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["serial", "parallel"])
@pytest.mark.parametrize("case", conformance_cases(), ids=str)
def test_conformance_on_one_kind_of_kernel(case, mode, monkeypatch):
    """Every op through its serial twins only, or its parallel kernels only."""
    limit = 1 << 62 if mode == "serial" else 0
    monkeypatch.setattr(cpu_backend, "SERIAL_WORK", limit)
    monkeypatch.setattr(cpu_backend, "SERIAL_ATTENTION", limit)
    case.check(NumbaBackend(threads=2))


def _decode_step(b, rng, history, hq, hkv, d, style, window):
    """One decode step of len(history) sequences through ``kv_attention``; returns its outputs."""
    slots = sum(history) + len(history) + 4
    perm = rng.permutation(slots).astype(np.int32)
    seq_slots, at = [], 0
    for h in history:
        seq_slots.append(perm[at:at + h + 1])
        at += h + 1
    kc, vc = _f(rng, slots, hkv * d), _f(rng, slots, hkv * d)
    write = np.array([s[-1] for s in seq_slots], dtype=np.int32)
    read = np.concatenate(seq_slots)
    cu_q = np.arange(len(history) + 1, dtype=np.int32)
    cu_k = np.cumsum([0] + [h + 1 for h in history]).astype(np.int32)
    inv_freq = (1.0 / 10000 ** (np.arange(0, d - d % 2, 2) / d)).astype(np.float32)
    plan = b.kv_attention_plan(np.array(history, np.int32), cu_q, cu_k, write, read, inv_freq, style, 1.0)
    q, k, v = _f(rng, len(history), hq, d), _f(rng, len(history), hkv, d), _f(rng, len(history), hkv, d)
    out = b.kv_attention(q, k, v, kc, vc, plan, 0.2, window)
    return out, kc, vc, plan


@pytest.mark.parametrize("style", ["neox", "interleaved"])
@pytest.mark.parametrize("window", [None, 7])
def test_fused_decode_step_equals_the_separate_ops(cpu, monkeypatch, style, window):
    """The same random step fused and composed of rope, scatter_rows, take_rows and attention
    (the plan's ``fused`` flag turned off)."""
    history = [0, 5, 33, 129, 2]
    original = cpu_backend.NumbaBackend.kv_attention_plan
    outputs = []
    for fused in (True, False):
        def plan(self, *args, **kwargs):
            p = original(self, *args, **kwargs)
            assert p.fused
            p.fused = fused
            return p

        monkeypatch.setattr(cpu_backend.NumbaBackend, "kv_attention_plan", plan)
        outputs.append(_decode_step(cpu, np.random.default_rng(7), history, 14, 2, 18, style, window)[:3])
    for a, b in zip(*outputs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_split_of_one_row_gives_views(cpu):
    x = np.arange(12, dtype=np.float32).reshape(1, 12)
    parts = cpu.split(x, [5, 0, 7])
    assert [p.shape for p in parts] == [(1, 5), (1, 0), (1, 7)]
    assert all(p.flags.c_contiguous for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), x)


def test_kv_attention_bad_inputs_raise(cpu):
    rng = np.random.default_rng(0)
    with pytest.raises(BadRequestError, match="do not describe"):
        cpu.kv_attention_plan(np.array([0, 1]), np.array([0, 1]), np.array([0, 1]), np.array([0]), None)
    with pytest.raises(BadRequestError, match="negative"):
        cpu.kv_attention_plan(np.array([3]), np.array([0, 1]), np.array([0, 2]), np.array([-1]), np.array([0, 1]))
    with pytest.raises(BadRequestError, match="rope style"):
        cpu.kv_attention_plan(np.array([0]), np.array([0, 1]), np.array([0, 1]), np.array([0]), None, None, "odd")
    plan = cpu.kv_attention_plan(np.array([1]), np.array([0, 1]), np.array([0, 2]), np.array([9]), np.array([3, 9]))
    q, k, v = _f(rng, 1, 4, 8), _f(rng, 1, 2, 8), _f(rng, 1, 2, 8)
    small = np.zeros((9, 16), np.float32)  # slot 9 is past its end
    with pytest.raises(BadRequestError, match="k_cache"):
        cpu.kv_attention(q, k, v, small, np.zeros((10, 16), np.float32), plan, 0.3)
    with pytest.raises(BadRequestError, match="v_cache"):
        cpu.kv_attention(q, k, v, np.zeros((10, 16), np.float32), np.zeros((10, 8), np.float32), plan, 0.3)
    with pytest.raises(BadRequestError, match="multiple"):
        cpu.kv_attention(_f(rng, 1, 3, 8), k, v, np.zeros((10, 16), np.float32), np.zeros((10, 16), np.float32),
                         plan, 0.3)
    with pytest.raises(BadRequestError, match="window"):
        cpu.kv_attention(q, k, v, np.zeros((10, 16), np.float32), np.zeros((10, 16), np.float32), plan, 0.3, 0)


def test_avx2_build_of_the_decode_kernels():
    """The same checks compiled for a plain AVX2/FMA CPU (haswell: the attention tiles' AVX2
    shape), in a fresh process with its own kernel cache."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell")
    env["NUMBA_CACHE_DIR"] = str(Path(__file__).resolve().parent / "__pycache__" / "numba-haswell")
    code = ("import sys, pytest; from gllm_backend_cpu.kernels import tile; assert not tile.AVX512; "
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', sys.argv[1], '-k', "
            "'attention_serial or fused or rope_serial']))")
    done = subprocess.run([sys.executable, "-c", code, __file__], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
