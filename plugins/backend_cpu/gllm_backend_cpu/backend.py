"""NumbaBackend: the op contract of gllm_core.backend as numba kernels over numpy arrays.

Activations are float32 C-contiguous numpy arrays, as for the numpy reference. Linear layers run
on the backend's own register-tile GEMM (``kernels.tile`` / ``kernels.gemm``) with the bias and
activation applied to each tile while it is still in L1: f32 weights are reordered into GEMM
panels once (within a memory budget), f16/bf16 weights are decoded panel by panel per call and
never held as float32; a few tokens (decode) take row kernels that read the stored weights
directly; GGML block-quantized weights take ``quant``'s kernels. Around them: fused residual +
norm, rope, packed variable-length streaming attention, gathers. numba and numpy's BLAS (used
only by ops inherited from the numpy reference and by ``quant``'s prompt path) share one thread
count.
"""

from __future__ import annotations

import threading
import weakref

import numba
import numpy as np

from gllm_core.backend import KVAttentionPlan, checked_kv_layout
from gllm_core.backends.numpy_backend import NumpyBackend, NumpyMatrix
from gllm_core.errors import BadRequestError
from gllm_core.weights import WeightMatrix, WeightVector

from . import quant as _quant
from . import threads as _threads
from .kernels import attention as _attn
from .kernels import elementwise as _ew
from .kernels import gemm as _gemm
from .kernels import linear as _lin
from .kernels import norms as _norms
from .kernels import rope as _rope
from .kernels.scalar import ACT_CODES

F32 = np.float32
# up to this many tokens a linear layer reads its weights row by row as stored, instead of the GEMM
# (measured, 1536x384, one thread: with cached f32 panels the GEMM wins from 3 tokens; when it
# must decode or pack the weights first, only from about 24)
FEW_TOKENS = 16
FEW_TOKENS_PACKED = 2
PACK_ELEMENTS = 1 << 22  # weights packed (16-bit decoded) per call for the GEMM: 16 MB at a time
PACKED_CACHE_MB = 1024  # f32 weights kept as GEMM panels, per backend, up to this much
# below this much work (elements touched; for attention, multiply-adds) an op runs its kernel's
# serial twin (kernels.twin): waking the thread pool costs more than the work
SERIAL_WORK = 1 << 15
SERIAL_ATTENTION = 1 << 19
_EMPTY = np.zeros(0, dtype=F32)
_EMPTY2 = np.zeros((0, 0), dtype=F32)
_NO_ROWS = np.zeros(0, dtype=np.int64)
_local = threading.local()


def _f32(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == F32 and x.flags.c_contiguous:
        return x
    return np.ascontiguousarray(x, dtype=F32)


def _rows(x: np.ndarray) -> np.ndarray:
    """``[..., D]`` → ``[rows, D]`` view."""
    return x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x


def _act_code(kind) -> int:
    try:
        return ACT_CODES[kind]
    except (KeyError, TypeError):
        raise BadRequestError(f"unknown activation {kind!r}; expected one of "
                              f"{', '.join(k for k in ACT_CODES if k)} or None") from None


class CpuMatrix(NumpyMatrix):
    """A prepared weight matrix: stored data used in place (16-bit kept as its uint16 bits).

    A NumpyMatrix (``weight``, ``f32``, ``shape``, ``dense``), so ops inherited from the numpy
    reference keep working on it."""

    __slots__ = ("kind", "data", "qlinear", "packed", "__weakref__")

    def __init__(self, weight: WeightMatrix):
        super().__init__(weight)
        # GGML block-quantized weights with a fused kernel (gllm_backend_cpu.quant); else None
        self.qlinear = _quant.quant_linear_for(weight)
        if weight.quant is not None:
            self.kind, self.data = "quant", weight.data
        elif weight.dtype == "f32":
            self.kind, self.data = "f32", weight.data
        else:  # f16 / bf16: the raw bits, read by the kernels
            self.kind, self.data = weight.dtype, np.asarray(weight.data).view(np.uint16)
        if self.kind != "f32":
            self.f32 = None
        self.packed = None  # f32 weights: GEMM panels, made on first use within the cache budget


class CpuAttentionPlan(KVAttentionPlan):
    """A ``kv_attention_plan`` checked once per forward pass: host arrays in the kernels' types,
    the attention task table per head layout, and whether the step fuses into one kernel."""

    __slots__ = ("tokens", "fused", "rows", "interleaved", "freqs", "max_slot", "work", "_tasks")

    def task_table(self, kv_heads: int, group: int) -> np.ndarray:
        tasks = self._tasks.get((kv_heads, group))
        if tasks is None:
            tasks = self._tasks[(kv_heads, group)] = _attn.make_tasks(self.cu_seqlens_q, kv_heads, group)
        return tasks


def _serial_below(kernel, work: int):
    """The kernel's serial twin for less than ``SERIAL_WORK`` elements of work, else the kernel."""
    return kernel.serial if work < SERIAL_WORK else kernel


def _run_tasks(kernel, work: int, *args) -> None:
    """An attention kernel: serial below ``SERIAL_ATTENTION`` multiply-adds; else parallel, its
    tasks handed out one by one (they differ in cost)."""
    if work < SERIAL_ATTENTION:
        kernel.serial(*args)
        return
    previous = numba.set_parallel_chunksize(1)
    try:
        kernel(*args)
    finally:
        numba.set_parallel_chunksize(previous)


class NumbaBackend(NumpyBackend):
    """numba kernels for every op of the contract. It subclasses the numpy reference only so
    that an op added to the contract later still runs (in numpy) until it gets its kernel."""

    name = "cpu"

    def __init__(self, threads: int | None = None, packed_cache_mb: int = PACKED_CACHE_MB):
        _threads.prefer_passive_waits()
        self._packed_budget = int(packed_cache_mb) << 20
        self._budget_lock = threading.Lock()
        requested = _threads.requested_threads(threads)
        self.threads = max(1, min(requested, numba.config.NUMBA_NUM_THREADS))
        self.blas = _threads.set_blas_threads(self.threads)
        self._use_threads()

    def _use_threads(self) -> None:
        # numba's thread count belongs to the calling thread: re-apply it on a new caller
        if getattr(_local, "threads", None) != self.threads:
            numba.set_num_threads(self.threads)
            _local.threads = self.threads

    # -- memory --------------------------------------------------------------------------------
    def upload(self, array):
        array = np.asarray(array)
        if array.dtype.kind == "f" and array.dtype != F32:
            return np.ascontiguousarray(array, dtype=F32)
        return np.ascontiguousarray(array)

    def download(self, x):
        return np.asarray(x)

    def prepare_matrix(self, w: WeightMatrix):
        return CpuMatrix(w)

    def prepare_vector(self, v: WeightVector):
        return np.array(v.to_float32(), dtype=F32, copy=True)  # small; writable like activations

    # -- shape ---------------------------------------------------------------------------------
    def view(self, x, shape):
        if type(x) is np.ndarray and x.flags.c_contiguous:  # the common case: never a copy
            return x.reshape(shape)
        try:
            return np.reshape(x, tuple(shape), copy=False)  # numpy >= 2.1: never a silent copy
        except TypeError:  # older numpy has no copy= argument
            return np.reshape(x, tuple(shape))

    def split(self, x, sizes):
        x = _f32(x)
        sizes = [int(s) for s in sizes]
        if x.ndim != 2 or sum(sizes) != x.shape[1] or min(sizes, default=0) < 0:
            raise BadRequestError(f"split: sizes {sizes} do not add up to the last axis of {x.shape}")
        rows = x.shape[0]
        if rows == 1:  # one row (a decode step): its column blocks are already contiguous
            parts, c0 = [], 0
            for size in sizes:
                parts.append(x[:, c0:c0 + size])
                c0 += size
            return parts
        self._use_threads()
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        flat = np.empty(rows * x.shape[1], dtype=F32)
        _serial_below(_ew.split_columns, x.size)(x, offsets, flat)
        return [flat[rows * offsets[p]:rows * offsets[p + 1]].reshape(rows, sizes[p]) for p in range(len(sizes))]

    def take_rows(self, x, rows):
        x = np.asarray(x)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        n = x.shape[0]
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise BadRequestError(f"take_rows: row index out of range for {n} rows")
        rows = np.where(rows < 0, rows + n, rows)
        if x.dtype != F32 or not x.flags.c_contiguous or x.ndim < 2:
            return x[rows]
        self._use_threads()
        flat = x.reshape(n, -1)
        out = np.empty((rows.shape[0], flat.shape[1]), dtype=F32)
        _serial_below(_ew.gather_rows_f32, out.size)(flat, rows, out)
        return out.reshape((rows.shape[0],) + x.shape[1:])

    def zeros(self, shape):
        return np.zeros(tuple(int(n) for n in shape), dtype=F32)  # calloc: pages zeroed lazily

    def scatter_rows(self, dst, rows, src, accumulate=False):
        if not isinstance(dst, np.ndarray) or dst.dtype != F32 or not dst.flags.c_contiguous or dst.ndim < 1:
            raise BadRequestError("scatter_rows: dst must be a float32 array made by this backend")
        n = dst.shape[0]
        table = dst.reshape(n, -1)
        rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
        src = _f32(src).reshape(rows.shape[0], -1) if np.size(src) == rows.shape[0] * table.shape[1] else None
        if src is None:
            raise BadRequestError(f"scatter_rows: {rows.shape[0]} rows of {dst.shape[1:]} do not match the source")
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= n):
            raise BadRequestError(f"scatter_rows: row index out of range for {n} rows")
        self._use_threads()
        _serial_below(_ew.scatter_rows, src.size)(table, rows, src, bool(accumulate))

    # -- math ----------------------------------------------------------------------------------
    def linear(self, x, w: CpuMatrix, bias=None, activation=None):
        x = _f32(x)
        act = _act_code(activation)
        tokens, cols = x.shape
        n_out = w.weight.rows
        if cols != w.weight.cols:
            raise BadRequestError(f"linear: input of {cols} features for {w.weight.name} "
                                  f"{w.weight.shape} (expects {w.weight.cols})")
        b = _EMPTY if bias is None else bias
        self._use_threads()
        if w.qlinear is not None:
            return w.qlinear(x, bias, act, _EMPTY)
        if w.packed is None and w.kind == "f32":
            self._pack_once(w)
        few = FEW_TOKENS_PACKED if w.packed is not None else FEW_TOKENS
        if tokens <= few and w.kind != "quant":
            out = np.empty((tokens, n_out), dtype=F32)
            work = tokens * n_out * cols
            if w.kind == "f32":
                _serial_below(_lin.linear_few_f32, work)(x, w.data, b, act, out)
            else:
                _serial_below(_lin.linear_few_16, work)(x, w.data, w.kind == "bf16", b, act, out)
            return out
        out = np.empty((tokens, n_out), dtype=F32)
        if w.packed is not None:
            _gemm.gemm_bias_act(x, w.packed, b, act, _gemm.panel_groups(tokens, w.packed.shape[0], self.threads), 0, out)
            return out
        total = _gemm.panel_count(n_out)
        step = max(1, PACK_ELEMENTS // (cols * _gemm.NR))  # panels packed at a time
        packed = np.empty((min(step, total), cols, _gemm.NR), dtype=F32)
        for p0 in range(0, total, step):
            p1 = min(total, p0 + step)
            r0, r1 = p0 * _gemm.NR, min(n_out, p1 * _gemm.NR)
            panels = packed[:p1 - p0]
            if w.kind == "f32":
                _gemm.pack_f32(w.data[r0:r1], panels)
            elif w.kind == "quant":
                _gemm.pack_f32(np.ascontiguousarray(w.weight.dense(slice(r0, r1)), dtype=F32), panels)
            else:
                _gemm.pack_16(w.data[r0:r1], w.kind == "bf16", panels)
            _gemm.gemm_bias_act(x, panels, b, act, _gemm.panel_groups(tokens, p1 - p0, self.threads), r0, out)
        return out

    def _pack_once(self, w: CpuMatrix) -> None:
        """Keep f32 weights as GEMM panels (a reordered copy) while the budget lasts; 16-bit and
        quantized weights are decoded per call instead, never held as float32."""
        rows, cols = w.weight.shape
        nbytes = _gemm.panel_count(rows) * cols * _gemm.NR * 4
        with self._budget_lock:
            if nbytes > self._packed_budget:
                return
            self._packed_budget -= nbytes
        packed = np.empty((_gemm.panel_count(rows), cols, _gemm.NR), dtype=F32)
        _gemm.pack_f32(w.data, packed)
        w.packed = packed
        weakref.finalize(w, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        with self._budget_lock:
            self._packed_budget += nbytes

    def embedding(self, table: CpuMatrix, ids):
        ids = np.ascontiguousarray(ids, dtype=np.int32).reshape(-1)
        vocab, dim = table.weight.shape
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            bad = int(ids[(ids < 0) | (ids >= vocab)][0])
            raise BadRequestError(f"token id {bad} is outside {table.weight.name} (vocabulary of {vocab})")
        if table.kind == "quant":
            return np.ascontiguousarray(table.weight.dense(ids.astype(np.int64)), dtype=F32)
        self._use_threads()
        out = np.empty((ids.shape[0], dim), dtype=F32)
        rows = ids.astype(np.int64)  # the index type take_rows uses too: one compiled kernel
        if table.kind == "f32":
            _serial_below(_ew.gather_rows_f32, out.size)(table.data, rows, out)
        else:
            _serial_below(_ew.gather_rows_16, out.size)(table.data, table.kind == "bf16", rows, out)
        return out

    def add(self, a, b):
        a, b = _f32(a), _f32(b)
        self._use_threads()
        out = np.empty(a.shape, dtype=F32)
        if b.shape == a.shape:
            _serial_below(_ew.add_flat, a.size)(a.reshape(-1), b.reshape(-1), out.reshape(-1))
        elif b.ndim == 1 and a.ndim >= 1 and b.shape[0] == a.shape[-1]:
            _serial_below(_ew.add_row_vector, a.size)(_rows(a), b, _rows(out))
        else:
            return np.add(a, b, dtype=F32)
        return out

    def mul(self, a, b):
        a, b = _f32(a), _f32(b)
        self._use_threads()
        out = np.empty(a.shape, dtype=F32)
        if b.shape == a.shape:
            _serial_below(_ew.mul_flat, a.size)(a.reshape(-1), b.reshape(-1), out.reshape(-1))
        elif b.ndim == 1 and a.ndim >= 1 and b.shape[0] == a.shape[-1]:
            _serial_below(_ew.mul_row_vector, a.size)(_rows(a), b, _rows(out))
        elif a.ndim == 2 and b.shape == (a.shape[0], 1):
            _serial_below(_ew.mul_column, a.size)(a, b.reshape(-1), out)
        else:
            return np.multiply(a, b, dtype=F32)
        return out

    def activation(self, x, kind):
        x = _f32(x)
        act = _act_code(kind)
        if x.ndim == 0:
            return super().activation(x, kind)
        self._use_threads()
        out = np.empty(x.shape, dtype=F32)
        _serial_below(_ew.bias_activation, x.size)(_rows(x), _EMPTY, act, _rows(out))
        return out

    def silu_mul(self, gate, up):
        gate, up = _f32(gate), _f32(up)
        if gate.shape != up.shape:
            raise BadRequestError(f"silu_mul: gate {gate.shape} and up {up.shape} differ")
        self._use_threads()
        out = np.empty(gate.shape, dtype=F32)
        _serial_below(_ew.silu_mul, gate.size)(_rows(gate), _rows(up), _rows(out))
        return out

    def layer_norm(self, x, weight, bias, eps, residual=None):
        x = _f32(x)
        res = _EMPTY2 if residual is None else _rows(_f32(residual))
        if residual is not None and res.shape != _rows(x).shape:
            raise BadRequestError(f"layer_norm: residual {np.shape(residual)} does not match {x.shape}")
        self._use_threads()
        out = np.empty(x.shape, dtype=F32)
        _serial_below(_norms.layer_norm_rows, x.size)(_rows(x), res, weight, _EMPTY if bias is None else bias,
                                                      float(eps), _rows(out))
        return out

    def rms_norm(self, x, weight, eps):
        x = _f32(x)
        self._use_threads()
        out = np.empty(x.shape, dtype=F32)
        _serial_below(_norms.rms_norm_rows, x.size)(_rows(x), _EMPTY2, weight, float(eps), _rows(out), _EMPTY2)
        return out

    def add_rms_norm(self, x, residual, weight, eps):
        x, residual = _f32(x), _f32(residual)
        if residual.shape != x.shape:
            raise BadRequestError(f"add_rms_norm: residual {residual.shape} does not match {x.shape}")
        self._use_threads()
        out = np.empty(x.shape, dtype=F32)
        hidden = np.empty(x.shape, dtype=F32)
        _serial_below(_norms.rms_norm_rows, x.size)(_rows(x), _rows(residual), weight, float(eps), _rows(out),
                                                    _rows(hidden))
        return out, hidden

    def rope(self, x, positions, inv_freq, style="neox", scale=1.0):
        if style not in ("neox", "interleaved"):
            raise BadRequestError(f"unknown rope style {style!r} (expected 'neox' or 'interleaved')")
        x = _f32(x)
        inv_freq = _f32(inv_freq).reshape(-1)
        positions = np.ascontiguousarray(positions, dtype=np.int64).reshape(-1)
        if x.ndim != 3 or positions.shape[0] != x.shape[0] or 2 * inv_freq.shape[0] > x.shape[2]:
            raise BadRequestError(f"rope: x {x.shape}, {positions.shape[0]} positions and "
                                  f"{inv_freq.shape[0]} frequencies do not fit together")
        self._use_threads()
        out = np.empty(x.shape, dtype=F32)
        _serial_below(_rope.rope_rows, x.size)(x, positions, inv_freq, style == "interleaved", float(scale), out)
        return out

    def attention(self, q, k, v, cu_seqlens_q, cu_seqlens_k, scale, causal=False, window=None):
        q, k, v = _f32(q), _f32(k), _f32(v)
        cu_q = np.ascontiguousarray(cu_seqlens_q, dtype=np.int64).reshape(-1)
        cu_k = np.ascontiguousarray(cu_seqlens_k, dtype=np.int64).reshape(-1)
        if q.ndim != 3 or k.ndim != 3 or v.ndim != 3 or k.shape[:2] != v.shape[:2] or q.shape[2] != k.shape[2]:
            raise BadRequestError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit together")
        if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
            raise BadRequestError(f"attention: {q.shape[1]} query heads are not a multiple of {k.shape[1]} KV heads")
        if (cu_q.shape != cu_k.shape or cu_q[0] != 0 or cu_k[0] != 0 or cu_q[-1] != q.shape[0]
                or cu_k[-1] != k.shape[0] or np.any(np.diff(cu_q) < 0) or np.any(np.diff(cu_k) < 0)):
            raise BadRequestError("attention: cu_seqlens do not describe the packed q / k rows")
        if window is not None and int(window) < 1:
            raise BadRequestError(f"attention: window must be at least 1, got {window!r}")
        out = np.empty((q.shape[0], q.shape[1], v.shape[2]), dtype=F32)
        if q.shape[0] == 0:
            return out
        self._use_threads()
        group = q.shape[1] // k.shape[1]
        if int(np.diff(cu_q).max()) >= _attn.TILED_ROWS:
            kt = np.empty((k.shape[1], k.shape[2], k.shape[0] + _attn.NR), dtype=F32)
            _attn.transpose_keys(k, kt)
        else:  # decode steps read k as it is
            kt = np.empty((k.shape[1], k.shape[2], 0), dtype=F32)
        tasks = _attn.make_tasks(cu_q, k.shape[1], group)
        work = int((np.diff(cu_q) * np.diff(cu_k)).sum()) * q.shape[1] * q.shape[2]
        _run_tasks(_attn.attention_blocks, work, q, k, kt, v, _NO_ROWS, cu_q, cu_k, tasks, np.float32(scale),
                   bool(causal), 0 if window is None else int(window), out)
        return out

    def kv_attention_plan(self, positions, cu_seqlens_q, cu_seqlens_k, write_slots, read_slots, inv_freq=None,
                          rope_style="neox", rope_scale=1.0):
        cu_q, cu_k, positions, write, read, rows, tokens, max_slot = checked_kv_layout(
            positions, cu_seqlens_q, cu_seqlens_k, write_slots, read_slots, rope_style, np.int64)
        lq, lk = np.diff(cu_q), np.diff(cu_k)
        freqs = _EMPTY if inv_freq is None else _f32(inv_freq).reshape(-1)
        plan = CpuAttentionPlan(positions, cu_q, cu_k, write, read, inv_freq, rope_style, rope_scale)
        plan.tokens, plan.rows, plan.freqs = tokens, rows, freqs
        plan.interleaved = rope_style == "interleaved"
        plan.max_slot = max_slot
        plan.work = int((lq * lk).sum())  # (query, key) pairs
        # a few query positions per sequence (decode steps): never the tiled path, so one kernel
        plan.fused = tokens > 0 and int(lq.max()) < _attn.TILED_ROWS
        plan._tasks = {}
        return plan

    def kv_attention(self, q, k, v, k_cache, v_cache, plan, scale, window=None):
        if not isinstance(plan, CpuAttentionPlan) or not plan.fused:
            return super().kv_attention(q, k, v, k_cache, v_cache, plan, scale, window)
        q, k, v = _f32(q), _f32(k), _f32(v)
        t = plan.tokens
        if (q.ndim != 3 or k.ndim != 3 or v.ndim != 3 or q.shape[0] != t or k.shape[0] != t
                or v.shape[:2] != k.shape[:2] or q.shape[2] != k.shape[2]):
            raise BadRequestError(f"kv_attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit "
                                  f"together and {t} tokens")
        hq, hkv, d, dv = q.shape[1], k.shape[1], k.shape[2], v.shape[2]
        if hkv == 0 or hq % hkv:
            raise BadRequestError(f"kv_attention: {hq} query heads are not a multiple of {hkv} KV heads")
        for name, cache, width in (("k_cache", k_cache, hkv * d), ("v_cache", v_cache, hkv * dv)):
            if (not isinstance(cache, np.ndarray) or cache.dtype != F32 or not cache.flags.c_contiguous
                    or cache.ndim != 2 or cache.shape[1] != width or cache.shape[0] <= plan.max_slot):
                raise BadRequestError(f"kv_attention: {name} must be a float32 [slots, {width}] array of "
                                      f"this backend with a row for every slot (up to {plan.max_slot})")
        if 2 * plan.freqs.shape[0] > d:
            raise BadRequestError(f"kv_attention: {plan.freqs.shape[0]} rotary frequencies for heads of {d}")
        if window is not None and int(window) < 1:
            raise BadRequestError(f"kv_attention: window must be at least 1, got {window!r}")
        self._use_threads()
        kc = k_cache.reshape(k_cache.shape[0], hkv, d)
        vc = v_cache.reshape(v_cache.shape[0], hkv, dv)
        qr = np.empty(q.shape, dtype=F32)
        out = np.empty((t, hq, dv), dtype=F32)
        _run_tasks(_attn.rope_store_attend, plan.work * hq * d, q, k, v, plan.positions, plan.freqs,
                   plan.interleaved, float(plan.rope_scale), kc, vc, plan.write_slots, plan.rows,
                   plan.cu_seqlens_q, plan.cu_seqlens_k, plan.task_table(hkv, hq // hkv), np.float32(scale),
                   0 if window is None else int(window), qr, out)
        return out

    def softmax(self, x):
        x = _f32(x)
        self._use_threads()
        out = np.empty(x.shape, dtype=F32)
        if x.size:
            _serial_below(_ew.softmax_rows, x.size)(_rows(x), _rows(out))
        return out

    def top_k(self, x, k):
        x = _f32(x)
        rows = _rows(x)
        k = min(int(k), rows.shape[1])
        if k < 1:
            raise BadRequestError(f"top_k: k must be at least 1, got {k}")
        self._use_threads()
        values = np.empty((rows.shape[0], k), dtype=F32)
        indices = np.empty((rows.shape[0], k), dtype=np.int32)
        _serial_below(_ew.top_k_rows, rows.size)(rows, k, values, indices)
        return values.reshape(x.shape[:-1] + (k,)), indices.reshape(x.shape[:-1] + (k,))
