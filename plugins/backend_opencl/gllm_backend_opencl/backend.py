"""The OpenCL kernel set: every op of ``gllm_core.backend.Backend`` on pyopencl buffers.

Arrays live on the device from op to op (``DeviceArray``: a buffer with a shape); weights are
uploaded once by ``prepare_matrix`` / ``prepare_vector`` in their stored type (f16 and bf16 stay
16-bit and are widened to float32 as the kernels read them; GGML blocks stay blocks, and are
dequantised in registers as the kernels read them). The host meets the device only in
``upload``, ``download``, ``top_k`` and in the small index arrays that ops take from the host
(positions, cu_seqlens, row indices), which are uploaded once per distinct content and reused by
every layer of a forward pass.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from importlib import resources
from typing import Sequence

import numpy as np

from gllm_core.backend import Backend, KVAttentionPlan, checked_kv_layout
from gllm_core.errors import BadRequestError, BackendUnavailableError
from gllm_core.weights import WeightMatrix, WeightVector

from .device import DeviceInfo, choose_device

ACT_CODES = {None: 0, "gelu": 1, "gelu_tanh": 2, "relu": 3, "silu": 4}
WEIGHT_CODES = {"f32": 0, "f16": 1, "bf16": 2}
# GGML block types computed from their blocks (kernels/quant.cl), by their GGML type id
QUANT_CODES = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_k": 10, "q3_k": 11, "q4_k": 12,
               "q5_k": 13, "q6_k": 14}
MAX_SPLITS = 32  # split-K pieces of one attention row at most
NORM_MAX = 8192  # longest row whose RMSNorm a matrix-vector product computes in local memory
GEMV_MAX_ROWS = 8  # x rows up to which linear reads each weight once per row group (decode)
_I32 = np.int32
_F32 = np.float32


class DeviceArray:
    """A float32 (or int32) array on the device: a buffer and a shape; for small index arrays also
    the host copy they came from (so lookups can be range-checked without reading the device).

    Two lazy forms save a copy and a launch where the next op can read them in place: a column
    view (``stride`` set: rows of the first axis lie ``stride`` elements apart from ``offset``;
    what ``split`` returns) and a row gather (``rows`` set: row ``i`` is row ``rows[i]`` of
    ``buf``; what ``take_rows`` returns). Ops that cannot read them make them contiguous first,
    in place (``OpenCLBackend._dense``).

    Two more for decode at batch 1, where the norm is computed by the next matrix-vector product
    (``norm`` set): a pending RMSNorm (kind 3, ``norm = (x, residual or None, weight, eps, h or
    None)``, what ``rms_norm`` / ``add_rms_norm`` return for one row) and the residual sum h of a
    pending ``add_rms_norm`` (kind 4, ``norm = (the pending norm,)``), which that product writes."""

    __slots__ = ("buf", "shape", "size", "dtype", "host", "kind", "stride", "offset", "rows", "norm",
                 "__weakref__")

    def __init__(self, buf, shape: tuple, dtype=_F32, host=None, stride=None, offset=0, rows=None, size=None,
                 norm=None):
        self.buf = buf
        self.shape = shape
        self.size = math.prod(shape) if size is None else size
        self.dtype = dtype
        self.host = host
        self.stride = stride
        self.offset = offset
        self.rows = rows
        self.norm = norm
        # contiguous, column view, row gather, pending norm, pending residual sum
        self.kind = 1 if stride is not None else 2 if rows is not None else 0 if norm is None else 3 + (len(norm) == 1)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def lazy(self) -> bool:
        return self.kind != 0

    def __repr__(self) -> str:
        form = ("", " column view", " row gather", " pending norm", " pending sum")[self.kind]
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}{form})"


class OpenCLAttentionPlan(KVAttentionPlan):
    """``kv_attention_plan``: checked once per forward pass, its index arrays on the device."""

    __slots__ = ("tokens", "cu_q", "cu_k", "max_slot", "freqs", "pos_d", "write_d", "read_d", "freq_d", "attn")

    def __init__(self, *args):
        super().__init__(*args)
        self.freq_d = None


class DeviceMatrix:
    """A prepared weight matrix: its stored bits on the device and the kernels that read them.

    ``quant`` is set for GGML block-quantized weights (the blocks as stored, never widened): the
    kernels of that type, resolved once at prepare."""

    __slots__ = ("buf", "shape", "dtype", "code", "name", "launch", "quant")

    def __init__(self, buf, shape, dtype: str, name: str, quant: "QuantKernels | None" = None):
        self.launch: dict = {}  # rows of x -> (GEMV kernel, global size, local size)
        self.buf = buf
        self.shape = tuple(shape)
        self.dtype = dtype
        self.code = WEIGHT_CODES.get(dtype, -1)
        self.name = name
        self.quant = quant

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[1]


class QuantKernels:
    """The kernels of one GGML block type on one device (kernels/quant.cl): matrix-vector for up
    to 1, 2, 4 and 8 rows of x, the tiled product for more, and the embedding lookup."""

    __slots__ = ("gemv", "gemm", "embedding", "lanes", "warps", "generic")

    def __init__(self, gemv: dict, gemm, embedding, lanes: int, warps: int, generic: dict | None = None):
        self.gemv = gemv  # rows of x rounded up (1, 2, 4, 8) -> (kernel, rows of W per row group)
        self.generic = generic or gemv  # the type-generic matrix-vector kernels (8 weights per load)
        self.gemm = gemm
        self.embedding = embedding
        self.lanes, self.warps = lanes, warps  # the matrix-vector work-group the kernels were built for


def _source(name: str) -> str:
    return resources.files(__package__).joinpath("kernels", name).read_text()


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def _enqueue_function():
    """``clEnqueueNDRangeKernel`` of the OpenCL library pyopencl is linked with, called through
    ctypes with no event: pyopencl makes (and the caller drops) an event for every launch, which
    costs NVIDIA's driver most of its ~12 us per enqueue. None where it cannot be found."""
    import ctypes
    import ctypes.util
    import glob

    import pyopencl

    here = os.path.join(os.path.dirname(pyopencl.__file__), ".libs")
    for path in sorted(glob.glob(os.path.join(here, "libOpenCL*"))) + [ctypes.util.find_library("OpenCL")]:
        if not path:
            continue
        try:
            fn = ctypes.CDLL(path).clEnqueueNDRangeKernel
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int  # no argtypes: the caller passes ctypes objects made once (half the call's cost)
        return fn
    return None


_ZERO = __import__("ctypes").c_uint(0)


class _EventlessKernel:
    """A pyopencl kernel launched without an event: ``k(queue, global, local, *args)`` as with
    pyopencl's own call (arguments set by pyopencl, the launch by ``clEnqueueNDRangeKernel``)."""

    __slots__ = ("kernel", "name", "set_args", "ptr", "enqueue", "sizes", "queue", "qptr")

    def __init__(self, kernel, name: str, enqueue):
        import ctypes

        self.kernel, self.name, self.enqueue = kernel, name, enqueue
        self.set_args = kernel.set_args
        self.ptr = ctypes.c_void_p(kernel.int_ptr)
        self.sizes: dict = {}  # (global, local) -> ctypes work dimensions and sizes
        self.queue, self.qptr = None, None

    def __call__(self, queue, gs, ls, *args):
        self.set_args(*args)
        hit = self.sizes.get((gs, ls))
        if hit is None:
            import ctypes

            n = len(gs)
            arr = ctypes.c_size_t * n
            hit = self.sizes[(gs, ls)] = (ctypes.c_uint(n), arr(*gs), None if ls is None else arr(*ls))
            if len(self.sizes) > 4096:
                self.sizes.clear()
        if queue is not self.queue:
            import ctypes

            self.queue, self.qptr = queue, ctypes.c_void_p(queue.int_ptr)
        err = self.enqueue(self.qptr, self.ptr, hit[0], None, hit[1], hit[2], _ZERO, None, None)
        if err:
            raise BackendUnavailableError(f"OpenCL: launching {self.name} {gs} / {ls} failed (error {err})")

    def __getattr__(self, attr):
        return getattr(self.kernel, attr)


class _Runtime:
    """One context, queue, memory pool and program cache per device, shared by every backend
    instance in the process (PoCL compiles on first use: compile once, reuse)."""

    _by_device: dict = {}
    _lock = threading.Lock()

    @classmethod
    def get(cls, info: DeviceInfo, device) -> "_Runtime":
        key = (info.platform, info.name, info.index)
        with cls._lock:
            rt = cls._by_device.get(key)
            if rt is None:
                rt = cls._by_device[key] = cls(info, device)
            return rt

    def __init__(self, info: DeviceInfo, device):
        import pyopencl as cl
        import pyopencl.tools

        self.cl = cl
        self.info = info
        self.device = device
        self.ctx = cl.Context([device])
        profile = os.environ.get("GLLM_OPENCL_PROFILE") == "1"  # event timestamps, for bench/gpu.py --trace
        self.queue = cl.CommandQueue(
            self.ctx, properties=cl.command_queue_properties.PROFILING_ENABLE if profile else 0)
        self.pool = cl.tools.MemoryPool(cl.tools.ImmediateAllocator(self.queue))
        self.lock = threading.RLock()
        # a launch held back one op, to be fused with its partner if that comes next (RoPE of the
        # queries then the keys, the KV cache's key write then its value write); every other op
        # enqueues it first, so the in-order queue keeps the program's order
        self.deferred = None
        self.programs: dict = {}
        self.kernels: dict = {}
        # launches without events (GLLM_OPENCL_EVENTLESS=0: pyopencl's own call; profiling needs events)
        self.enqueue = None
        if not profile and os.environ.get("GLLM_OPENCL_EVENTLESS", "1") != "0":
            self.enqueue = _enqueue_function()
        self.max_group = int(device.max_work_group_size)
        self.local_mem = int(device.local_mem_size)
        self.compute_units = int(device.max_compute_units)
        self.nvidia = "nvidia" in info.platform.lower()
        try:  # cl_nv_device_attribute_query
            self.nv_compute = (int(device.compute_capability_major_nv), int(device.compute_capability_minor_nv))
        except Exception:  # noqa: BLE001 - not an NVIDIA device
            self.nv_compute = None

    def program(self, files: Sequence[str], defines: dict):
        key = (tuple(files), tuple(sorted(defines.items())))
        prg = self.programs.get(key)
        if prg is None:
            src = _source("common.h") + "\n" + "\n".join(_source(f) for f in files)
            options = ["-cl-std=CL1.2"] + [f"-D{k}={v}" for k, v in sorted(defines.items())]
            try:
                prg = self.cl.Program(self.ctx, src).build(options=options)
            except self.cl.Error as exc:
                raise BackendUnavailableError(f"OpenCL program {files} {defines} failed to build on "
                                              f"{self.info.name}: {exc}") from exc
            self.programs[key] = prg
        return prg

    def kernel(self, program, name: str, scalar_types: list):
        """One kernel object per (program, name), shared by the backends on this device."""
        key = (id(program), name)
        k = self.kernels.get(key)
        if k is None:
            k = self.cl.Kernel(program, name)
            k.set_scalar_arg_dtypes(scalar_types)
            if self.enqueue is not None:
                k = _EventlessKernel(k, name, self.enqueue)
            self.kernels[key] = k
        return k


B = None  # a buffer argument in scalar_types lists


PRECISIONS = ("exact", "fast")
# matrix-unit GEMM tile shapes: warps along M and N, mma tiles per warp along M (16 rows) and N
# (8 columns), k step
MMA_VARIANTS = {
    "x16-2": (2, 2, 2, 8, 32), "x16-4": (4, 2, 2, 8, 32), "x16-4k64": (4, 2, 2, 8, 64),
    "x16-w64": (2, 2, 4, 8, 32), "x16-w64k64": (2, 2, 4, 8, 64), "x16-8x1": (2, 4, 4, 4, 32),
}
# measured on an H200 (bench/gpu_sweep.py, 2026-11-29): the cp.async pipeline below, 128 x 128
# tiles in 3 stages with one 16-bit x (68 ms of GEMM per 1024-token Qwen2.5-7B prefill, against 92
# for x16-4k64), 64 x 256 in 2 stages with x as hi + lo (108 against 149 for x16-4); both need
# 48 KiB of local memory: where a device has less, the register-staged shapes
MMA_DEFAULT = {"exact": "cp64x256s2", "fast": "cp128x128s3"}
MMA_FALLBACK = {"exact": "x16-4", "fast": "x16-4k64"}
# the cp.async + ldmatrix pipeline (kernels/linear_mma_cp.cl): warps along M and N, mma tiles per
# warp along M and N, stages; local memory: stages x (BM (x2 when exact) + BN) x 64 bytes
MMA_CP_VARIANTS = {
    "cp128x128s2": (2, 4, 4, 4, 2), "cp128x128s3": (2, 4, 4, 4, 3), "cp64x128s3": (2, 2, 2, 8, 3),
    "cp64x128s4": (2, 2, 2, 8, 4), "cp128x256s2": (2, 4, 4, 8, 2), "cp256x128s2": (4, 2, 4, 8, 2),
    "cp128x128w4s3": (2, 2, 4, 8, 3), "cp64x256s2": (2, 4, 2, 8, 2),
}


def mma_cp_local_bytes(variant: str, split: int) -> int:
    wm, wn, mt, nl, st = MMA_CP_VARIANTS[variant]
    return st * (16 * mt * wm * (1 + split) + 8 * nl * wn) * 64


class OpenCLBackend(Backend):
    """``precision``: on NVIDIA GPUs (sm_80+) linear layers over many rows with f16/bf16 weights run
    on the matrix units. "exact" (default) feeds them x as two 16-bit halves (hi + lo), keeping
    float32 accuracy at twice the matrix work; "fast" rounds x to 16 bits once, as f16 inference in
    PyTorch does. ``GLLM_OPENCL_PRECISION`` sets the default; ``GLLM_OPENCL_MMA=0`` turns the
    matrix units off."""

    name = "opencl"

    def __init__(self, device: str | int | None = None, attention_min_groups: int | None = None,
                 precision: str | None = None):
        precision = precision or os.environ.get("GLLM_OPENCL_PRECISION") or "exact"
        if precision not in PRECISIONS:
            raise BackendUnavailableError(f"opencl: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.precision = precision
        info, dev = choose_device(None if device is None else str(device))
        self.info = info
        self.rt = rt = _Runtime.get(info, dev)
        self.cl = rt.cl
        self.queue = rt.queue
        self._lock = rt.lock
        self._alloc = rt.pool.allocate
        self._pending: list = []  # non-blocking uploads in flight: their host arrays stay alive
        self._consts: dict = {}
        red = 1  # row kernels' work-group: wide on GPUs (one row of a decode step is one group)
        while red * 2 <= min(1024 if info.kind == "gpu" else 256, rt.max_group):
            red *= 2
        self.red = red
        # split-K decode attention aims for at least this many work-groups
        self.attention_min_groups = attention_min_groups or 4 * rt.compute_units
        prg = rt.program(["basic.cl"], {"RED": red})
        _kernel = rt.kernel
        i, f = _I32, _F32
        self._k_fill = _kernel(prg, "fill_zero", [B, i])
        self._k_add = _kernel(prg, "add", [B, B, B, i, i, i])
        self._k_mul = _kernel(prg, "mul", [B, B, B, i, i, i])
        self._k_act = _kernel(prg, "activation", [B, B, i, i])
        self._k_silu_mul = _kernel(prg, "silu_mul", [B, B, B, i, i, i, i, i, i])
        self._k_gather = _kernel(prg, "gather_rows", [B, B, B, i, i])
        self._k_scatter = _kernel(prg, "scatter_rows", [B, B, B, B, B, i, i, i, i, i, i, i])
        self._k_split3 = _kernel(prg, "split3", [B, B, B, B, i, i, i, i, i, i])
        self._k_embedding = [_kernel(prg, f"embedding_{d}", [B, B, B, i, i, i]) for d in ("f32", "f16", "bf16")]
        self._k_layer_norm = _kernel(prg, "layer_norm", [B, B, B, B, B, i, f, i, i])
        self._k_rms_norm = _kernel(prg, "rms_norm", [B, B, B, B, B, i, f, i])
        # few rows (decode): a narrower work-group per row finishes sooner (fewer reduction steps)
        self.red_small = min(256, red)
        self._k_rms_norm_small = _kernel(rt.program(["basic.cl"], {"RED": self.red_small}), "rms_norm",
                                         [B, B, B, B, B, i, f, i])
        self.norm_small_rows = 16  # rows up to which it is used (0: never)
        self._k_softmax = _kernel(prg, "softmax", [B, B, i])
        self._k_rope = _kernel(prg, "rope", [B, B, B, B, B, i, i, f, i, i, i, i, i, i])
        self._k_rope_store = _kernel(prg, "rope_store", [B, B, B, B, B, i, i, f, i, i, i, i, i, i, B, B, B, B, i, i, i])
        self._gemv_kernels: dict = {}
        self._gemm_kernels: dict = {}
        self._mma_kernels: dict = {}
        self.mma_status = "not tried"
        self.mma_variant = None  # a key of MMA_VARIANTS, or None: the fastest measured for the precision
        # matrix-vector shape: LANES work-items per row group, WARPS groups, RPT rows per group
        self.gemv_lanes, self.gemv_warps = 32, 4
        self.gemv_rpt = {1: 1, 2: 1, 4: 2, 8: 2}
        self.gemv_unroll = {1: 1, 2: 1, 4: 1, 8: 1}  # U: chunks of 8 columns in flight per row
        self.gemv_vload = False  # f16 rows through vload_half8 rather than 16-byte loads + bit decoding
        # one row of x (decode at batch 1): one work-group of 128 work-items per weight row, so a
        # few thousand rows still fill the GPU (H200: o and down 2.01 -> 1.71 ms per step)
        self.gemv_shape1 = (128, 1) if info.kind == "gpu" else None
        # Q4_K at one row of x: weight rows per warp (each lane's x values serve them all)
        self.q4k_rows_per_warp = int(os.environ.get("GLLM_OPENCL_Q4K_RPT", "4"))
        self._attention_kernels: dict = {}
        self._readers: dict = {}  # id(buffer) -> weak references to lazy arrays reading it
        self._index_cache: dict = {}
        self._plans: dict = {}
        self.attention_threads = 128  # work-items per attention work-group
        self.attention_bk = None  # keys per block (None: the largest that fits local memory)
        self.attention_split_blocks = 1  # key blocks per split-K piece at least
        # prefill attention on NVIDIA's matrix units in precision "fast" (kernels/attention_mma.cl)
        self.attention_mma = True
        self.attention_mma_status = "not tried"
        # one-row RMSNorm computed by the next matrix-vector product (GLLM_OPENCL_FUSE_NORM=0: off)
        self.fuse_norm = os.environ.get("GLLM_OPENCL_FUSE_NORM", "1") != "0"
        self.norm_groups_per_cu = 6
        self.norm_lanes, self.norm_warps = 32, 8  # its work-group
        self.norm_shfl = 0  # NVIDIA: rows per warp per pass with warp shuffles (0: the portable form)
        # RoPE of queries and keys and the KV cache's key and value writes in one launch when they
        # come in that order (a decode step); off: two launches (RoPE pair, write pair)
        self.fuse_rope_store = True
        # a gated MLP's gate/up product with the RMSNorm before it and silu(gate) * up after it in
        # one launch (decode at batch 1). Off by default: holding the largest matrix-vector product
        # back until silu_mul comes made decode slower on the H200 although the GPU was busy less
        # (131 against 155 tok/s, 8 runs each, bench/RESULTS.md); off: the product, then silu_mul
        self.fuse_silu = False
        self._counter_len, self._counter_buf = 0, None

    def __repr__(self) -> str:
        return f"OpenCLBackend({self.info.describe()})"

    # -- memory --------------------------------------------------------------------------------
    def _empty(self, shape: tuple, dtype=_F32) -> DeviceArray:
        n = math.prod(shape)
        return DeviceArray(self._alloc(4 * n or 4), shape, dtype, size=n)  # float32 and int32 alike

    def _write(self, buf, array: np.ndarray) -> None:
        evt = self.cl.enqueue_copy(self.queue, buf, array, is_blocking=False)
        self._pending.append(evt)  # dropping the event would wait for it
        if len(self._pending) > 4096:
            self.queue.finish()
            self._pending.clear()

    def upload(self, array):
        a = np.asarray(array)
        if a.dtype.kind in "iub":
            a = np.ascontiguousarray(a, dtype=_I32)
            host = a if a.size <= 1 << 16 else None
        else:
            a = np.ascontiguousarray(a, dtype=_F32)
            host = None
        out = DeviceArray(self._alloc(max(a.nbytes, 4)), a.shape, a.dtype.type, host)
        if a.size:
            with self._lock:
                self._write(out.buf, a)
        return out

    def _const(self, array: np.ndarray) -> DeviceArray:
        """A device copy of a small host index array, uploaded once per distinct content."""
        key = (array.dtype.char, array.shape, array.tobytes())
        hit = self._consts.get(key)
        if hit is None:
            if len(self._consts) > 512:
                self._consts.clear()
            hit = self._consts[key] = self.upload(array)
        return hit

    def download(self, x):
        if self.rt.deferred is not None:
            self._flush()
        if x.kind:
            x = self._dense(x)
        out = np.empty(x.shape, dtype=x.dtype)
        if out.size:
            with self._lock:
                self.cl.enqueue_copy(self.queue, out, x.buf, is_blocking=True)
                self._pending.clear()  # the in-order queue has run everything before the read
        return out

    def _dense(self, x: DeviceArray) -> DeviceArray:
        """Make a lazy array contiguous, in place (every holder of it sees the same values)."""
        if self.rt.deferred is not None:
            self._flush()
        if x.kind >= 3:
            self._norm_now(x.norm[0] if x.kind == 4 else x)
            return x
        t = x.shape[0] if x.shape else 1
        w = x.size // t if t else 0
        buf = self._alloc(4 * t * w or 4)
        if t and w:
            with self._lock:
                if x.kind == 2:
                    self._k_gather(self.queue, (_round_up(w, 64), t), (64, 1), x.buf, x.rows.buf, buf, w, t)
                else:
                    self._k_split3(self.queue, (_round_up(w, 64), t), (64, 1), x.buf, buf, buf, buf, x.stride,
                                   x.offset, w, 0, 0, t)
        x.buf, x.stride, x.offset, x.rows, x.kind = buf, None, 0, None, 0
        return x

    def _norm_now(self, y: DeviceArray) -> None:
        """Run a pending RMSNorm (kind 3) into its own buffer, and its residual sum h if any."""
        if y.kind != 3:
            return
        src, res, weight, eps, h = y.norm
        d = y.shape[-1]
        with self._lock:
            k, red = self._rms_kernel(1)
            k(self.queue, (red,), (red,), src.buf, src.buf if res is None else res.buf, weight.buf, y.buf,
              y.buf if h is None else h.buf, d, float(eps), int(res is not None))
        y.norm, y.kind = None, 0
        if h is not None:
            h.norm, h.kind = None, 0

    def _register(self, y: DeviceArray) -> None:
        """Remember a lazy array by the buffer it reads, so a write into that buffer
        (``scatter_rows``) makes it contiguous first and it keeps the values it was made with."""
        readers = self._readers
        lst = readers.get(id(y.buf))
        if lst is None:
            if len(readers) > 4096:  # forget buffers whose readers are all gone
                for key in [k for k, v in readers.items() if all(r() is None for r in v)]:
                    del readers[key]
            lst = readers[id(y.buf)] = []
        elif len(lst) >= 32:  # a pooled buffer read again and again: drop the references that died
            lst[:] = [r for r in lst if r() is not None]
        lst.append(weakref.ref(y))

    def _flush(self) -> None:
        with self._lock:
            held, self.rt.deferred = self.rt.deferred, None
            if held is not None:
                held[1]()

    def _c(self, x: DeviceArray) -> DeviceArray:
        """``x`` contiguous (ops that read only contiguous arrays call this on their inputs)."""
        return self._dense(x) if x.kind else x

    def _resident(self, array: np.ndarray):
        mf = self.cl.mem_flags
        array = np.ascontiguousarray(array)
        if array.nbytes == 0:
            return self.cl.Buffer(self.rt.ctx, mf.READ_ONLY, 4)
        return self.cl.Buffer(self.rt.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=array)

    def prepare_matrix(self, w: WeightMatrix):
        if w.quant is None and w.dtype in WEIGHT_CODES:
            return DeviceMatrix(self._resident(w.data), w.shape, w.dtype, w.name)
        if w.quant is not None and w.quant.name in QUANT_CODES:  # the blocks as stored
            return DeviceMatrix(self._resident(np.ascontiguousarray(w.data, dtype=np.uint8)), w.shape, w.quant.name,
                                w.name, self._quant_kernels(w.quant.name))
        # a storage type without kernels here: widen to float32 once
        return DeviceMatrix(self._resident(w.dense().astype(_F32)), w.shape, "f32", w.name)

    def _quant_kernels(self, qname: str) -> QuantKernels:
        """The kernels of one GGML block type: one program, built once per device and process."""
        rt, lanes, warps, k4 = self.rt, self.gemv_lanes, self.gemv_warps, self.q4k_rows_per_warp
        key = ("quant", qname, lanes, warps, k4)
        hit = rt.kernels.get(key)
        if hit is None:
            prg = rt.program(["quant.cl"], {"QTYPE": QUANT_CODES[qname], "LANES": lanes, "WARPS": warps, "K4_RPT": k4})
            args = [B, B, B, B, _I32, _I32, _I32, _I32, _I32]
            generic = {nt: (rt.kernel(prg, f"qgemv_{nt}", args), rpt) for nt, rpt in ((1, 1), (2, 1), (4, 2), (8, 2))}
            gemv = dict(generic)
            if qname == "q4_k" and lanes % 8 == 0:  # one row of x: 16-byte loads of the quants, k4 rows per warp
                gemv[1] = (rt.kernel(prg, "q4k_gemv_1", args), k4)
            hit = rt.kernels[key] = QuantKernels(gemv, rt.kernel(prg, "qgemm", args),
                                                 rt.kernel(prg, "qembedding", [B, B, B, _I32, _I32, _I32]), lanes, warps,
                                                 generic)
        return hit

    def prepare_vector(self, v: WeightVector):
        a = np.ascontiguousarray(v.to_float32(), dtype=_F32)
        return DeviceArray(self._resident(a), a.shape, _F32)

    def zeros(self, shape):
        y = self._empty(tuple(int(v) for v in shape))
        n = y.size
        if n:
            with self._lock:
                self._k_fill(self.queue, (_round_up(n, 256),), (256,), y.buf, n)
        return y

    # -- shape ---------------------------------------------------------------------------------
    def view(self, x, shape):
        shape = tuple(shape)
        n = math.prod(shape)
        if n != x.size:
            shape = tuple(int(v) for v in shape)
            if -1 in shape:
                i = shape.index(-1)
                rest = math.prod(shape[:i] + shape[i + 1:])
                shape = shape[:i] + (x.size // rest if rest else 0,) + shape[i + 1:]
            if math.prod(shape) != x.size or min(shape, default=0) < 0:
                raise BadRequestError(f"view: cannot view {x.shape} as {shape}")
        if x.kind and (x.kind >= 3 or not shape or not x.shape or shape[0] != x.shape[0]):
            x = self._dense(x)  # a lazy array keeps its form only while its first axis stays
        y = DeviceArray(x.buf, shape, x.dtype, x.host, x.stride, x.offset, x.rows, x.size)
        if y.kind:
            self._register(y)
        return y

    def split(self, x, sizes):
        held = self.rt.deferred
        if held is not None and not (held[0] == "gemv_pair" and x.buf is held[2] and len(sizes) == 2
                                     and sizes[0] == sizes[1] and x.kind == 0):
            self._flush()  # (two halves of a held gate/up product: views now, silu_mul may take them)
        d = x.shape[-1]
        sizes = [int(s) for s in sizes]
        if sum(sizes) != d or min(sizes, default=0) < 0:
            raise BadRequestError(f"split: sizes {sizes} do not add up to the last axis {d}")
        if x.kind:
            x = self._dense(x)
        t = x.size // d if d else 0
        lead = x.shape[:-1]
        if len(lead) == 1 and t:  # column views of x: no copy, no launch
            parts, col = [], 0
            for s_ in sizes:
                p = DeviceArray(x.buf, (t, s_), x.dtype, None, d, col)
                self._register(p)
                parts.append(p)
                col += s_
            return parts
        parts = [self._empty(lead + (s_,)) for s_ in sizes]
        if t:
            with self._lock:
                col = 0
                for i in range(0, len(sizes), 3):  # one launch per three parts
                    w = sizes[i:i + 3] + [0] * (3 - len(sizes[i:i + 3]))
                    bufs = [p.buf for p in parts[i:i + 3]]
                    bufs += [bufs[0]] * (3 - len(bufs))
                    span = sum(w)
                    if span:
                        self._k_split3(self.queue, (_round_up(span, 64), t), (64, 1), x.buf, *bufs, d, col, *w, t)
                    col += span
        return parts

    def _index(self, rows, n: int, what: str) -> DeviceArray:
        """Host row indices → a device copy, range-checked and cached by content."""
        rows = np.asarray(rows)
        key = (rows.dtype.char, rows.tobytes(), n)
        hit = self._index_cache.get(key)
        if hit is not None:
            return hit
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise BadRequestError(f"{what}: rows must be a 1-D integer array, got {rows.dtype}{rows.shape}")
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise BadRequestError(f"{what}: row index out of range for {n} rows")
        host = np.where(rows < 0, rows + n, rows).astype(_I32)
        if len(self._index_cache) > 512:
            self._index_cache.clear()
        hit = self._index_cache[key] = self.upload(host)
        return hit

    def take_rows(self, x, rows):
        if self.rt.deferred is not None:
            self._flush()
        n = x.shape[0]
        idx = self._index(rows, n, "take_rows")
        shape = (idx.shape[0],) + x.shape[1:]
        if x.kind:
            x = self._dense(x)
        if x.dtype is not _F32 or not idx.shape[0]:  # int arrays (and empty picks) are copied now
            y = self._empty(shape, x.dtype)
            d = x.size // n if n else 0
            if idx.shape[0] and d:
                with self._lock:
                    self._k_gather(self.queue, (_round_up(d, 64), idx.shape[0]), (64, 1), x.buf, idx.buf, y.buf, d,
                                   idx.shape[0])
            return y
        y = DeviceArray(x.buf, shape, x.dtype, None, None, 0, idx)  # read in place by attention
        self._register(y)
        return y

    def scatter_rows(self, dst, rows, src, accumulate=False):
        n = dst.shape[0]
        idx = self._index(rows, n, "scatter_rows")
        if dst.kind:
            raise BadRequestError("scatter_rows: the destination must be an array of its own, not a view")
        d = dst.size // n if n else 0
        t = idx.shape[0]
        if src.size != t * d:
            raise BadRequestError(f"scatter_rows: src {src.shape} does not hold {t} rows of {d}")
        readers = self._readers.pop(id(dst.buf), None)
        if readers:  # whoever still reads dst lazily must read it as it was
            for ref in readers:
                lazy = ref()
                if lazy is not None and lazy.buf is dst.buf:
                    self._dense(lazy)
        if src.kind > 1:
            src = self._dense(src)
        if not (t and d):
            return
        stride, off = (src.stride, src.offset) if src.kind == 1 else (d, 0)
        acc = int(bool(accumulate))
        q = self.queue
        with self._lock:
            held = self.rt.deferred
            if held is not None and not acc and held[0] == "rope2":
                rp = held[2]
                if src.kind == 0 and src.buf is rp[2] and d == rp[10] and t == rp[11]:  # the rotated keys
                    pair = held[1]

                    def rope_then_keys(dst=dst.buf, src=src.buf):
                        pair()
                        self._k_scatter(q, (_round_up(d, 64), t, 1), (64, 1, 1), dst, dst, idx.buf, src, src, d, t, 0,
                                        d, 0, d, 0)
                    self.rt.deferred = ("rope2k", rope_then_keys, rp, (dst.buf, idx))
                    return
            if held is not None and not acc and held[0] == "rope2k":
                rp, (kc, kidx) = held[2], held[3]
                if kidx is idx and kc is not dst.buf and t == rp[11]:  # the values: everything in one launch
                    self.rt.deferred = None
                    xb, y0, y1, p, f, dh, half, scale, inter, hd0, hd1, _, xs, xo = rp
                    n = t * (hd0 + 2 * hd1 + d)
                    self._k_rope_store(q, (_round_up(n, 256),), (256,), xb, y0, y1, p.buf, f.buf, dh, half, scale,
                                       inter, hd0, hd1, t, xs, xo, kc, dst.buf, idx.buf, src.buf, d, stride, off)
                    return
            if held is not None:
                if held[0] == "scatter" and held[2] == (idx, d, t, acc) and held[3][0] is not dst.buf:
                    self.rt.deferred = None  # the value write after the key write: one launch for both
                    d0, s0, st0, of0 = held[3]
                    self._k_scatter(q, (_round_up(d, 64), t, 2), (64, 1, 1), d0, dst.buf, idx.buf, s0, src.buf, d, t,
                                    acc, st0, of0, stride, off)
                    return
                self._flush()

            def launch(dst=dst.buf, src=src.buf):
                self._k_scatter(q, (_round_up(d, 64), t, 1), (64, 1, 1), dst, dst, idx.buf, src, src, d, t, acc,
                                stride, off, stride, off)
            self.rt.deferred = ("scatter", launch, (idx, d, t, acc), (dst.buf, src.buf, stride, off))

    # -- math ----------------------------------------------------------------------------------
    def _gemv(self, code: int, nt: int, norm_n: int = 0):
        """The matrix-vector kernel; with ``norm_n`` its form that computes a one-row RMSNorm of
        ``norm_n`` columns first (``gemv_norm``)."""
        key = (code, nt, norm_n, (self.norm_shfl, self.norm_lanes, self.norm_warps) if norm_n else self.gemv_shape1)
        k = self._gemv_kernels.get(key)
        if k is None:
            rpt, lanes, warps = self.gemv_rpt[nt], self.gemv_lanes, self.gemv_warps
            if nt == 1 and self.gemv_shape1 is not None:
                lanes, warps = self.gemv_shape1
            if norm_n:
                lanes, warps = self.norm_lanes, self.norm_warps
            defines = {"GEMV": 1, "WDTYPE": code, "NT": nt, "RPT": rpt, "LANES": lanes, "WARPS": warps,
                       "U": self.gemv_unroll[nt]}
            if self.gemv_vload:
                defines["F16_VLOAD"] = 1
            if norm_n:
                defines["XN"] = norm_n
                if self.norm_shfl and lanes == 32 and self.rt.nv_compute is not None and self.rt.nv_compute >= (7, 0):
                    defines["NV_SHFL"] = self.norm_shfl  # rows per warp per pass, lanes summed by shfl.sync
            prg = self.rt.program(["linear.cl"], defines)
            if norm_n:
                kern = self.rt.kernel(prg, "gemv_norm", [B, B, B, B, B, B, B, _I32, _I32, _I32, _I32, _F32, _I32, B])
            else:
                kern = self.rt.kernel(prg, "gemv", [B, B, B, B, _I32, _I32, _I32, _I32, _I32])
            k = self._gemv_kernels[key] = (kern, lanes, warps, rpt)
        return k

    def _gemm(self, code: int):
        k = self._gemm_kernels.get(code)
        if k is None:
            tm, tn = 4, 4
            prg = self.rt.program(["linear.cl"], {"GEMM": 1, "WDTYPE": code, "TM": tm, "TN": tn})
            k = self._gemm_kernels[code] = (self.rt.kernel(prg, "gemm", [B, B, B, B, _I32, _I32, _I32, _I32, _I32]),
                                            16 * tm, 16 * tn)
        return k

    def _mma(self, code: int):
        """A launcher of the matrix-unit GEMM for this weight type, or None where it cannot run
        (each launcher is checked once against the host on a small product before it is trusted)."""
        variant = self.mma_variant or MMA_DEFAULT[self.precision]
        key = (code, self.precision, variant)
        if key in self._mma_kernels:
            return self._mma_kernels[key]
        run = None
        rt = self.rt
        if code == 0:
            pass
        elif os.environ.get("GLLM_OPENCL_MMA", "1") == "0":
            self.mma_status = "off (GLLM_OPENCL_MMA=0)"
        elif rt.nv_compute is None or rt.nv_compute < (8, 0):
            self.mma_status = "no NVIDIA matrix units (sm_80+) on this device"
        else:
            split = int(self.precision == "exact")
            tries = [variant] + ([MMA_FALLBACK[self.precision]] if self.mma_variant is None else [])
            for v in tries:
                try:
                    run = self._mma_launcher(code, split, v)
                    self.mma_status = self._check_mma(run, code)
                    if self.mma_status != "ok":
                        run = None
                except BackendUnavailableError as exc:
                    self.mma_status = f"build failed: {exc}"
                    run = None
                if run is not None:
                    break
        self._mma_kernels[key] = run
        return run

    def _mma_launcher(self, code: int, split: int, variant: str):
        rt, q, i = self.rt, self.queue, _I32
        if variant == "f32x":  # x converted as each tile is staged
            prg = rt.program(["linear_mma.cl"], {"WDTYPE": code, "SPLIT_X": split})
            k = rt.kernel(prg, "gemm_mma", [B, B, B, B, i, i, i, i, i])

            def run(x, w, b, y, t, n_in, n_out, has_bias, act):
                k(q, (-(-n_out // 128) * 128, -(-t // 64)), (128, 1), w, x, b, y, t, n_in, n_out, has_bias, act)
            return run
        if variant in MMA_CP_VARIANTS:
            return self._mma_cp_launcher(code, split, variant)
        # 16-bit x made once per call; the GEMM's tile shape by name
        wm, wn, mt, nl, kb = MMA_VARIANTS[variant]
        prg = rt.program(["linear_mma.cl"], {"WDTYPE": code, "SPLIT_X": split, "WM": wm, "WN": wn, "MT": mt,
                                             "NL": nl, "KB": kb})
        conv = rt.kernel(prg, "to16", [B, B, B, i])
        k = rt.kernel(prg, "gemm_mma16", [B, B, B, B, B, i, i, i, i, i])
        run16 = self._mma16_run(conv, k, split, 32 * wm * wn, 16 * mt * wm, 8 * nl * wn)
        if kb <= 32:
            return run16
        fallback = self._mma_launcher(code, split, "f32x")

        def run(x, w, b, y, t, n_in, n_out, has_bias, act):
            if n_in % kb:
                return fallback(x, w, b, y, t, n_in, n_out, has_bias, act)
            run16(x, w, b, y, t, n_in, n_out, has_bias, act)
        return run

    def _mma16_run(self, conv, k, split: int, nt: int, bm: int, bn: int):
        """The launcher of a GEMM kernel ``k`` over 16-bit x: ``conv`` (to16) makes x's 16-bit
        halves (hi, and lo where ``split``), then ``k`` runs with ``nt`` work-items per block of
        ``bm`` rows x ``bn`` columns of y."""
        q, alloc = self.queue, self._alloc

        def run(x, w, b, y, t, n_in, n_out, has_bias, act):
            n2 = t * n_in // 2
            hi = alloc(4 * n2)
            lo = alloc(4 * n2) if split else hi
            conv(q, (_round_up(n2, 256),), (256,), x, hi, lo, n2)
            k(q, (-(-n_out // bn) * nt, -(-t // bm)), (nt, 1), w, hi, lo, b, y, t, n_in, n_out, has_bias, act)
        return run

    def _mma_cp_launcher(self, code: int, split: int, variant: str):
        """The cp.async + ldmatrix pipeline GEMM (kernels/linear_mma_cp.cl) from 16-bit x."""
        rt, i = self.rt, _I32
        if mma_cp_local_bytes(variant, split) > rt.local_mem:
            raise BackendUnavailableError(f"GEMM variant {variant} needs more local memory than {rt.local_mem} bytes")
        wm, wn, mt, nl, st = MMA_CP_VARIANTS[variant]
        defines = {"WDTYPE": code, "SPLIT_X": split, "WM": wm, "WN": wn, "MT": mt, "NL": nl, "ST": st}
        if rt.nv_compute is None:
            defines["NO_PTX"] = 1  # compile check only (never launched off NVIDIA)
        conv_defines = {"WDTYPE": code, "SPLIT_X": split, **({"NO_PTX": 1} if "NO_PTX" in defines else {})}
        conv = rt.kernel(rt.program(["linear_mma.cl"], conv_defines), "to16", [B, B, B, i])
        k = rt.kernel(rt.program(["linear_mma_cp.cl"], defines), "gemm_mma_cp", [B, B, B, B, B, i, i, i, i, i])
        return self._mma16_run(conv, k, split, 32 * wm * wn, 16 * mt * wm, 8 * nl * wn)

    def _check_mma(self, run, code: int) -> str:
        from gllm_core.weights import bf16_to_f32, f32_to_bf16

        rng = np.random.default_rng(0)
        t, n_in, n_out = 150, 96, 260
        x = rng.standard_normal((t, n_in)).astype(_F32)
        w32 = rng.standard_normal((n_out, n_in)).astype(_F32)
        w = w32.astype(np.float16) if code == 1 else f32_to_bf16(w32)
        wf = w.astype(_F32) if code == 1 else bf16_to_f32(w)
        expected = x @ wf.T
        xb, wb = self.upload(x), self._resident(w)
        y = self._empty((t, n_out))
        with self._lock:
            run(xb.buf, wb, y.buf, y.buf, t, n_in, n_out, 0, 0)
        got = self.download(y)
        tol = 1e-4 if self.precision == "exact" else 3e-2
        err = float(np.max(np.abs(got - expected) / (1 + np.abs(expected))))
        return "ok" if err < tol else f"self-check failed (error {err:.2g})"

    def linear(self, x, w: DeviceMatrix, bias=None, activation=None):
        if self.rt.deferred is not None:
            self._flush()
        if x.kind == 3 and w.quant is None and x.shape[-1] == w.cols:
            return self._linear_norm(x, w, bias, activation)
        if x.kind:
            x = self._dense(x)
        n_out, n_in = w.shape
        if x.shape[-1] != n_in:
            raise BadRequestError(f"linear: input {x.shape} does not match {w.name} of shape {w.shape}")
        t = x.size // n_in if n_in else 0
        n = t * n_out
        y = DeviceArray(self._alloc(4 * n or 4), x.shape[:-1] + (n_out,), _F32, size=n)
        if n == 0:
            return y
        act = ACT_CODES[activation]
        b = y.buf if bias is None else bias.buf
        if t <= GEMV_MAX_ROWS:
            launch = w.launch.get(t)
            if launch is None:
                nt = 1 if t == 1 else 2 if t == 2 else 4 if t <= 4 else 8
                if w.quant is not None:
                    (k, rpt), lanes, warps = w.quant.gemv[nt], w.quant.lanes, w.quant.warps
                else:
                    k, lanes, warps, rpt = self._gemv(w.code, nt)
                groups = -(-n_out // (warps * rpt))
                launch = w.launch[t] = (k, (groups * lanes, warps), (lanes, warps))
            k, gs, ls = launch
            with self._lock:
                k(self.queue, gs, ls, w.buf, x.buf, b, y.buf, t, n_in, n_out, int(bias is not None), act)
            return y
        with self._lock:
            if w.quant is not None:
                w.quant.gemm(self.queue, (-(-n_out // 64) * 16, -(-t // 64) * 16), (16, 16), w.buf, x.buf, b, y.buf, t,
                             n_in, n_out, int(bias is not None), act)
            elif w.code > 0 and n_in % 32 == 0 and (mma := self._mma(w.code)) is not None:
                mma(x.buf, w.buf, b, y.buf, t, n_in, n_out, int(bias is not None), act)
            else:
                k, bm, bn = self._gemm(w.code)
                k(self.queue, (-(-n_out // bn) * 16, -(-t // bm) * 16), (16, 16), w.buf, x.buf, b, y.buf, t, n_in,
                  n_out, int(bias is not None), act)
        return y

    def _linear_norm(self, x, w: DeviceMatrix, bias, activation):
        """act(rms_norm(a (+ r)) @ W.T + b) for one row: the norm in the product's prologue."""
        src, res, weight, eps, h = x.norm
        n_out, n_in = w.shape
        k, lanes, warps, rpt = self._gemv(w.code, 1, n_in)
        y = DeviceArray(self._alloc(4 * n_out), x.shape[:-1] + (n_out,), _F32, size=n_out)
        cap = self.norm_groups_per_cu * self.rt.compute_units
        q, act = self.queue, ACT_CODES[activation]

        def launch(pair_half=0, pair_out=y.buf):
            # a few work-groups per compute unit, each looping over rows: the norm is paid once per group
            per = warps * (1 if pair_half else max(2, self.norm_shfl))
            groups = max(1, min(-(-(pair_half or n_out) // per), cap))
            k(q, (groups * lanes, warps), (lanes, warps), w.buf, src.buf, src.buf if res is None else res.buf,
              weight.buf, y.buf if bias is None else bias.buf, y.buf, src.buf if h is None else h.buf, n_out,
              int(bias is not None), act, int(res is not None), float(eps), pair_half, pair_out)
        with self._lock:
            if self.fuse_silu and not self.norm_shfl and act == 0 and n_out % 2 == 0:
                # held back one op: if the next ops split y in halves and silu_mul them (a gated
                # MLP's gate and up), the product comes out of this launch (see silu_mul)
                self.rt.deferred = ("gemv_pair", launch, y.buf, n_out)
            else:
                launch()
        if h is not None:  # written by work-group 0 of that launch (any reader flushes it first)
            h.norm, h.kind = None, 0
        return y

    def embedding(self, table: DeviceMatrix, ids):
        if self.rt.deferred is not None:
            self._flush()
        ids = self._c(ids)
        v, d = table.shape
        if ids.host is not None and ids.host.size and (ids.host.min() < 0 or ids.host.max() >= v):
            raise BadRequestError(f"embedding: token id out of range for {table.name} of {v} rows")
        t = ids.size
        y = self._empty(ids.shape + (d,))
        if t and d and table.quant is not None:
            with self._lock:
                table.quant.embedding(self.queue, (_round_up(d // 8, 64), t), (64, 1), table.buf, ids.buf, y.buf, v, d,
                                      t)
        elif t and d:
            with self._lock:
                self._k_embedding[table.code](self.queue, (_round_up(d, 64), t), (64, 1), table.buf, ids.buf, y.buf,
                                              v, d, t)
        return y

    def _binary(self, kernel, a, b, what):
        if self.rt.deferred is not None:
            self._flush()
        a, b = self._c(a), self._c(b)
        n = a.size
        if b.size == n:
            mode, d = 0, 1
        elif b.ndim == 1 and a.shape and b.shape[0] == a.shape[-1]:
            mode, d = 1, b.shape[0]
        elif a.ndim >= 1 and b.shape == a.shape[:-1] + (1,):
            mode, d = 2, a.shape[-1]
        else:
            raise BadRequestError(f"{what}: cannot broadcast {b.shape} onto {a.shape}")
        y = self._empty(a.shape)
        if n:
            with self._lock:
                kernel(self.queue, (_round_up(n, 256),), (256,), a.buf, b.buf, y.buf, n, d, mode)
        return y

    def add(self, a, b):
        return self._binary(self._k_add, a, b, "add")

    def mul(self, a, b):
        return self._binary(self._k_mul, a, b, "mul")

    def activation(self, x, kind):
        if self.rt.deferred is not None:
            self._flush()
        x = self._c(x)
        if kind not in ACT_CODES or kind is None:
            raise BadRequestError(f"activation: unknown kind {kind!r}")
        y = self._empty(x.shape)
        n = x.size
        if n:
            with self._lock:
                self._k_act(self.queue, (_round_up(n, 256),), (256,), x.buf, y.buf, n, ACT_CODES[kind])
        return y

    def silu_mul(self, gate, up):
        held = self.rt.deferred
        if held is not None:
            if (held[0] == "gemv_pair" and gate.kind == 1 and up.kind == 1 and gate.buf is held[2]
                    and up.buf is held[2] and gate.shape == up.shape and gate.ndim == 2 and gate.shape[0] == 1
                    and 2 * gate.shape[1] == held[3] and gate.offset == 0 and up.offset == gate.shape[1]):
                self.rt.deferred = None  # the gate/up product writes silu(gate) * up itself
                y = self._empty(gate.shape)
                with self._lock:
                    held[1](gate.shape[1], y.buf)
                return y
            self._flush()
        if gate.shape != up.shape:
            raise BadRequestError(f"silu_mul: gate {gate.shape} and up {up.shape} differ")
        if gate.kind > 1 or (gate.kind == 1 and gate.ndim != 2):
            gate = self._dense(gate)
        if up.kind > 1 or (up.kind == 1 and up.ndim != 2):
            up = self._dense(up)
        d = gate.shape[-1] if gate.shape else 1
        gs, go = (gate.stride, gate.offset) if gate.kind == 1 else (d, 0)
        us, uo = (up.stride, up.offset) if up.kind == 1 else (d, 0)
        y = self._empty(gate.shape)
        n = gate.size
        if n:
            with self._lock:
                self._k_silu_mul(self.queue, (_round_up(n, 256),), (256,), gate.buf, up.buf, y.buf, n, d, gs, go, us, uo)
        return y

    def layer_norm(self, x, weight, bias, eps, residual=None):
        if self.rt.deferred is not None:
            self._flush()
        x = self._c(x)
        residual = None if residual is None else self._c(residual)
        d = x.shape[-1]
        rows = x.size // d if d else 0
        y = self._empty(x.shape)
        if rows:
            res = x.buf if residual is None else residual.buf
            with self._lock:
                self._k_layer_norm(self.queue, (rows * self.red,), (self.red,), x.buf, res, weight.buf,
                                   weight.buf if bias is None else bias.buf, y.buf, d, float(eps),
                                   int(residual is not None), int(bias is not None))
        return y

    def _rms_kernel(self, rows: int):
        if rows <= self.norm_small_rows:
            return self._k_rms_norm_small, self.red_small
        return self._k_rms_norm, self.red

    def _lazy_norm(self, x, d: int, rows: int) -> bool:
        # x of d floats in local memory, with room for the kernel's sums (devices with little of it
        # keep the separate norm)
        return (self.fuse_norm and rows == 1 and 0 < d <= NORM_MAX and d % 8 == 0 and x.ndim == 2
                and 4 * d + 16 * 1024 <= self.rt.local_mem)

    def rms_norm(self, x, weight, eps):
        if self.rt.deferred is not None:
            self._flush()
        x = self._c(x)
        d = x.shape[-1]
        rows = x.size // d if d else 0
        if self._lazy_norm(x, d, rows):  # the next matrix-vector product computes it
            return DeviceArray(self._alloc(4 * d), x.shape, _F32, size=x.size, norm=(x, None, weight, eps, None))
        y = self._empty(x.shape)
        if rows:
            with self._lock:
                k, red = self._rms_kernel(rows)
                k(self.queue, (rows * red,), (red,), x.buf, x.buf, weight.buf, y.buf, y.buf, d, float(eps), 0)
        return y

    def add_rms_norm(self, x, residual, weight, eps):
        if self.rt.deferred is not None:
            self._flush()
        x, residual = self._c(x), self._c(residual)
        d = x.shape[-1]
        rows = x.size // d if d else 0
        if x.shape == residual.shape and self._lazy_norm(x, d, rows):  # the next matrix-vector product computes both
            y = DeviceArray(self._alloc(4 * d), x.shape, _F32, size=x.size)
            h = DeviceArray(self._alloc(4 * d), x.shape, _F32, size=x.size, norm=(y,))
            y.norm, y.kind = (x, residual, weight, eps, h), 3
            return y, h
        y, h = self._empty(x.shape), self._empty(x.shape)
        if rows:
            with self._lock:
                k, red = self._rms_kernel(rows)
                k(self.queue, (rows * red,), (red,), x.buf, residual.buf, weight.buf, y.buf, h.buf, d, float(eps), 1)
        return y, h

    def rope(self, x, positions, inv_freq, style="neox", scale=1.0):
        if style not in ("neox", "interleaved"):
            raise BadRequestError(f"rope: unknown style {style!r} (neox or interleaved)")
        if x.kind > 1:
            x = self._dense(x)
        t, h, d = x.shape
        inv = np.ascontiguousarray(inv_freq, dtype=_F32)
        pos = np.ascontiguousarray(positions, dtype=_I32)
        if pos.shape != (t,) or 2 * inv.shape[0] > d:
            raise BadRequestError(f"rope: positions {pos.shape} / inv_freq {inv.shape} do not fit x {x.shape}")
        y = self._empty(x.shape)
        hd = h * d
        if not t * hd:
            return y
        p, f = self._const(pos), self._const(inv)
        stride, off = (x.stride, x.offset) if x.kind == 1 else (hd, 0)
        half, scale, inter = inv.shape[0], float(scale), int(style == "interleaved")
        q = self.queue
        with self._lock:
            held = self.rt.deferred
            if held is not None:
                if held[0] == "rope" and held[2] == (x.buf, stride, off, p, f, d, half, scale, inter, t):
                    self.rt.deferred = None  # the keys right after the queries: one launch for both
                    y0, hd0 = held[3]
                    n = t * (hd0 + hd)

                    def pair(xb=x.buf, y1=y.buf):
                        self._k_rope(q, (_round_up(n, 256),), (256,), xb, y0, y1, p.buf, f.buf, d, half, scale,
                                     inter, hd0, hd, n, stride, off - hd0)
                    if self.fuse_rope_store:  # held on: the KV cache writes may follow
                        self.rt.deferred = ("rope2", pair, (x.buf, y0, y.buf, p, f, d, half, scale, inter, hd0, hd, t,
                                                            stride, off - hd0))
                    else:
                        pair()
                    return y
                self._flush()

            def launch(x=x.buf, y=y.buf):
                n = t * hd
                self._k_rope(q, (_round_up(n, 256),), (256,), x, y, y, p.buf, f.buf, d, half, scale, inter, hd, 0, n,
                             stride, off)
            if x.kind == 1:  # a column view: the keys may follow from the next columns
                self.rt.deferred = ("rope", launch, (x.buf, stride, off + hd, p, f, d, half, scale, inter, t),
                                    (y.buf, hd))
            else:
                launch()
        return y

    def _attention_kernel(self, d: int, dv: int, bq: int):
        key = (d, dv, bq, self.attention_bk)
        hit = self._attention_kernels.get(key)
        if hit is None:
            nt = min(self.attention_threads, self.rt.max_group)
            budget = min(self.rt.local_mem, 48 * 1024) - 512 - 8 * MAX_SPLITS * bq  # and the split merge's weights
            bk = 8
            # decode (few rows): blocks of 16 keys, so short contexts still spread over many
            # work-groups (measured on an H200 at a 130-key context: 20 against 30 us per layer)
            want = self.attention_bk or (16 if bq <= 8 else None)
            for cand in (32, 16) if want is None else (want,):
                need = 4 * (bq * (d + 1) + cand * (d + 1) + cand * dv + bq * (cand + 1) + nt)
                if need <= budget and cand % (nt // bq) == 0:
                    bk = cand
                    break
            while bq > 8 and 4 * (bq * (d + 1) + bk * (d + 1) + bk * dv + bq * (bk + 1) + nt) > budget:
                bq //= 2
            if bk % (nt // bq):
                bk = nt // bq
            prg = self.rt.program(["attention.cl"], {"D": d, "DV": dv, "BQ": bq, "BK": bk, "NT": nt,
                                                     "MAXS": MAX_SPLITS})
            i = _I32
            common = [B, B, B, B, B, B, B, _F32, i, i, i, i, i, i, i, i, i, i, i, i, i, B, i, i]
            attn = self.rt.kernel(prg, "attention", common)
            merge = self.rt.kernel(prg, "attention_split", common[:4] + [B, B] + common[4:] + [B])
            hit = self._attention_kernels[key] = (attn, merge, bq, bk, nt)
        return hit

    def attention(self, q, k, v, cu_seqlens_q, cu_seqlens_k, scale, causal=False, window=None):
        if self.rt.deferred is not None:
            self._flush()
        tq, hq, d = q.shape
        tk, hkv, dk = k.shape
        dv = v.shape[2]
        if dk != d or v.shape[:2] != k.shape[:2] or hq % hkv:
            raise BadRequestError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit together")
        if window is not None and window < 1:
            raise BadRequestError(f"attention: window must be at least 1, got {window}")
        cu_q = np.ascontiguousarray(cu_seqlens_q, dtype=_I32)
        cu_k = np.ascontiguousarray(cu_seqlens_k, dtype=_I32)
        if cu_q.shape != cu_k.shape or cu_q[-1] != tq or cu_k[-1] != tk:
            raise BadRequestError(f"attention: cu_seqlens {cu_q.tolist()} / {cu_k.tolist()} do not describe "
                                  f"{tq} queries and {tk} keys")
        # keys and values gathered from the KV cache by the same rows are read in place
        if q.kind > 1:
            q = self._dense(q)
        rows = k.rows if (k.kind == 2 and v.kind == 2 and v.rows is k.rows) else None
        if rows is None:
            if k.kind > 1:
                k = self._dense(k)
            if v.kind > 1:
                v = self._dense(v)
        return self._attend(q, k, v, rows, cu_q, cu_k, scale, causal, window, tq, hq, hkv, d, dv)

    def _attend(self, q, k, v, rows, cu_q, cu_k, scale, causal, window, tq, hq, hkv, d, dv, store=None):
        """attention's launch, its arguments checked (k and v read through ``rows`` when set).
        ``store``: where the batch layout's plans live (a kv_attention plan's own dict, freed with
        it), instead of the backend's cache by content."""
        out = self._empty((tq, hq, dv))
        if tq == 0:
            return out
        if (self.precision == "fast" and self.attention_mma and d == dv and d % 16 == 0 and d <= 128
                and tq >= 16 and (mk := self._attention_mma_kernel(d)) is not None):
            self._attend_mma(mk, q, k, v, out, rows, cu_q, cu_k, scale, causal, window, hq, hkv, store)
            return out
        plan = self._attention_plan(cu_q, cu_k, hq, hkv, d, dv, store)
        attn, split_kernel, nt, nblocks, nsplit, split_len, bl, cq, ck = plan
        qs, qo = (q.stride, q.offset) if q.kind == 1 else (hq * d, 0)
        ks, ko = (k.stride, k.offset) if k.kind == 1 else (hkv * d, 0)
        vs, vo = (v.stride, v.offset) if v.kind == 1 else (hkv * dv, 0)
        args = (bl.buf, cq.buf, ck.buf, float(scale), int(bool(causal)), int(window or 0), hq // hkv, hq, hkv,
                split_len, tq, qs, qo, ks, ko, vs, vo, cq.buf if rows is None else rows.buf, int(rows is not None),
                int(d % 4 == 0 and dv % 4 == 0 and (ks | ko | vs | vo) % 4 == 0))
        with self._lock:
            if nsplit == 1:
                attn(self.queue, (nblocks * nt, hkv, 1), (nt, 1, 1), q.buf, k.buf, v.buf, out.buf, *args)
            else:
                part_o = self._alloc(4 * nsplit * tq * hq * dv)
                part_ml = self._alloc(8 * nsplit * tq * hq)
                split_kernel(self.queue, (nblocks * nt, hkv, nsplit), (nt, 1, 1), q.buf, k.buf, v.buf, out.buf,
                             part_o, part_ml, *args, self._counters(nblocks * hkv))
        return out

    # -- attention through the KV cache: RoPE, the cache writes and attention in two launches ----
    def kv_attention_plan(self, positions, cu_seqlens_q, cu_seqlens_k, write_slots, read_slots, inv_freq=None,
                          rope_style="neox", rope_scale=1.0):
        cu_q, cu_k, pos, write, read, _, tokens, max_slot = checked_kv_layout(
            positions, cu_seqlens_q, cu_seqlens_k, write_slots, read_slots, rope_style, _I32)
        plan = OpenCLAttentionPlan(positions, cu_seqlens_q, cu_seqlens_k, write_slots, read_slots, inv_freq,
                                   rope_style, rope_scale)
        plan.tokens, plan.cu_q, plan.cu_k = tokens, cu_q, cu_k
        plan.max_slot = max_slot
        plan.freqs = None if inv_freq is None else np.ascontiguousarray(inv_freq, dtype=_F32).reshape(-1)
        plan.attn = {}  # attention's work-group layout, made by the first layer, freed with the plan
        if tokens > 0:  # uploaded once per forward pass (every layer reads them), freed with the plan
            plan.pos_d = self.upload(pos)
            plan.write_d = self.upload(write)
            plan.read_d = None if read is None else self.upload(read)
            plan.freq_d = None if plan.freqs is None or not plan.freqs.size else self._const(plan.freqs)
        return plan

    def kv_attention(self, q, k, v, k_cache, v_cache, plan, scale, window=None):
        """One launch for RoPE of q and k with the cache writes of k and v (``rope_store``), one
        for attention over the cache rows, when q and k are adjacent column views of one buffer (a
        fused QKV product's output); otherwise the composed default."""
        if (not isinstance(plan, OpenCLAttentionPlan) or plan.freq_d is None or plan.tokens <= 0
                or q.kind != 1 or k.kind != 1 or v.kind > 1 or q.buf is not k.buf or q.stride != k.stride
                or q.ndim != 3 or k.ndim != 3 or v.ndim != 3 or k_cache.kind or v_cache.kind):
            return super().kv_attention(q, k, v, k_cache, v_cache, plan, scale, window)
        t, hq, d = q.shape
        _, hkv, dk = k.shape
        dv = v.shape[2]
        if (t != plan.tokens or k.shape[0] != t or v.shape[:2] != k.shape[:2] or dk != d or hkv == 0
                or k.offset != q.offset + hq * d):
            return super().kv_attention(q, k, v, k_cache, v_cache, plan, scale, window)
        if hq % hkv:
            raise BadRequestError(f"kv_attention: {hq} query heads are not a multiple of {hkv} KV heads")
        for name, cache, width in (("k_cache", k_cache, hkv * d), ("v_cache", v_cache, hkv * dv)):
            if cache.ndim != 2 or cache.shape[1] != width or cache.shape[0] <= plan.max_slot:
                raise BadRequestError(f"kv_attention: {name} {cache.shape} must be [slots, {width}] with a row for "
                                      f"every slot (up to {plan.max_slot})")
        if 2 * plan.freqs.shape[0] > d:
            raise BadRequestError(f"kv_attention: {plan.freqs.shape[0]} rotary frequencies for heads of {d}")
        if window is not None and window < 1:
            raise BadRequestError(f"kv_attention: window must be at least 1, got {window}")
        if self.rt.deferred is not None:
            self._flush()
        if self._readers:  # lazy reads of a cache must keep the values they were made with
            for cache in (k_cache, v_cache):
                for ref in self._readers.pop(id(cache.buf), ()):
                    lazy = ref()
                    if lazy is not None and lazy.buf is cache.buf:
                        self._dense(lazy)
        hd0, hd1 = hq * d, hkv * d
        qr = self._empty((t, hq, d))
        kr = self._empty((t, hkv, d))
        vs, vo = (v.stride, v.offset) if v.kind == 1 else (hkv * dv, 0)
        n = t * (hd0 + 2 * hd1 + hkv * dv)
        with self._lock:
            self._k_rope_store(self.queue, (_round_up(n, 256),), (256,), q.buf, qr.buf, kr.buf, plan.pos_d.buf,
                               plan.freq_d.buf, d, plan.freqs.shape[0], float(plan.rope_scale),
                               int(plan.rope_style == "interleaved"), hd0, hd1, t, q.stride, q.offset, k_cache.buf,
                               v_cache.buf, plan.write_d.buf, v.buf, hkv * dv, vs, vo)
        if plan.read_d is None:  # every sequence starts here: the new keys and values are all of them
            return self._attend(qr, kr, v, None, plan.cu_q, plan.cu_k, scale, True, window, t, hq, hkv, d, dv,
                                plan.attn)
        kc = DeviceArray(k_cache.buf, (int(plan.cu_k[-1]), hkv, d))
        vc = DeviceArray(v_cache.buf, (int(plan.cu_k[-1]), hkv, dv))
        return self._attend(qr, kc, vc, plan.read_d, plan.cu_q, plan.cu_k, scale, True, window, t, hq, hkv, d, dv,
                            plan.attn)

    def _attend_mma(self, kern, q, k, v, out, rows, cu_q, cu_k, scale, causal, window, hq, hkv, store=None):
        """Prefill attention on the matrix units (precision "fast"): 64 query rows of one head per
        work-group (kernels/attention_mma.cl)."""
        key = ("mma", cu_q.tobytes(), cu_k.tobytes())
        cache, up = (self._plans, self._const) if store is None else (store, self.upload)
        hit = cache.get(key)
        if hit is None:
            lq = np.diff(cu_q)
            blocks = np.asarray([(b, r0) for b in range(len(lq)) for r0 in range(0, int(lq[b]), 64)],
                                dtype=_I32).reshape(-1)
            if store is None and len(self._plans) > 64:
                self._plans.clear()
            hit = cache[key] = (len(blocks) // 2, up(blocks), up(cu_q), up(cu_k))
        nblocks, bl, cq, ck = hit
        d = q.shape[2]
        qs, qo = (q.stride, q.offset) if q.kind == 1 else (hq * d, 0)
        ks, ko = (k.stride, k.offset) if k.kind == 1 else (hkv * d, 0)
        vs, vo = (v.stride, v.offset) if v.kind == 1 else (hkv * d, 0)
        with self._lock:
            kern(self.queue, (nblocks * 128, hq), (128, 1), q.buf, k.buf, v.buf, out.buf, bl.buf, cq.buf, ck.buf,
                 float(scale), int(bool(causal)), int(window or 0), hq // hkv, hq, hkv, qs, qo, ks, ko, vs, vo,
                 cq.buf if rows is None else rows.buf, int(rows is not None))

    def _attention_mma_kernel(self, d: int):
        """The matrix-unit prefill attention for head size d, or None where it cannot run (checked
        once against the host on a small packed batch before it is trusted)."""
        key = ("mma", d)
        if key in self._attention_kernels:
            return self._attention_kernels[key]
        kern, rt = None, self.rt
        if os.environ.get("GLLM_OPENCL_MMA", "1") == "0" or rt.nv_compute is None or rt.nv_compute < (8, 0):
            self.attention_mma_status = "no NVIDIA matrix units (sm_80+) on this device"
        else:
            try:
                prg = rt.program(["attention_mma.cl"], {"D": d})
                i = _I32
                kern = rt.kernel(prg, "attention_mma", [B, B, B, B, B, B, B, _F32, i, i, i, i, i, i, i, i, i, i, i,
                                                        B, i])
                self._attention_kernels[key] = kern  # (the check below goes through attention())
                self.attention_mma_status = self._check_attention_mma(d)
                if self.attention_mma_status != "ok":
                    kern = None
            except BackendUnavailableError as exc:
                self.attention_mma_status = f"build failed: {exc}"
                kern = None
        self._attention_kernels[key] = kern
        return kern

    def _check_attention_mma(self, d: int) -> str:
        rng = np.random.default_rng(0)
        lens_q, lens_k, hq, hkv = (70, 33), (70, 90), 4, 2
        cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(_I32)
        cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(_I32)
        q = rng.standard_normal((cu_q[-1], hq, d)).astype(_F32)
        k = rng.standard_normal((cu_k[-1], hkv, d)).astype(_F32)
        v = rng.standard_normal((cu_k[-1], hkv, d)).astype(_F32)
        scale = d ** -0.5
        worst = 0.0
        for window in (None, 20):
            got = self.download(self.attention(self.upload(q), self.upload(k), self.upload(v), cu_q, cu_k, scale, True,
                                               window))
            for b in range(2):
                qb, kb, vb = q[cu_q[b]:cu_q[b + 1]], k[cu_k[b]:cu_k[b + 1]], v[cu_k[b]:cu_k[b + 1]]
                lq, lk = len(qb), len(kb)
                pos = np.arange(lq)[:, None] + lk - lq
                kj = np.arange(lk)[None, :]
                mask = kj <= pos
                if window:
                    mask &= kj > pos - window
                for h in range(hq):
                    sc = qb[:, h] @ kb[:, h // (hq // hkv)].T * scale
                    sc = np.where(mask, sc, -np.inf)
                    p = np.exp(sc - sc.max(-1, keepdims=True))
                    ref = (p / p.sum(-1, keepdims=True)) @ vb[:, h // (hq // hkv)]
                    worst = max(worst, float(np.max(np.abs(got[cu_q[b]:cu_q[b + 1], h] - ref))))
        return "ok" if worst < 2e-2 else f"self-check failed (error {worst:.2g})"

    def _attention_plan(self, cu_q, cu_k, hq, hkv, d, dv, store=None):
        """Work-groups, split-K and the uploaded offsets of one batch layout: computed once per
        forward pass, reused by every layer."""
        key = (cu_q.tobytes(), cu_k.tobytes(), hq, hkv, d, dv, self.attention_bk, self.attention_split_blocks)
        cache, up = (self._plans, self._const) if store is None else (store, self.upload)
        plan = cache.get(key)
        if plan is not None:
            return plan
        group = hq // hkv
        lq, lk = np.diff(cu_q), np.diff(cu_k)
        rows_max = int(lq.max()) * group
        attn, split_kernel, bq, bk, nt = self._attention_kernel(d, dv, 8 if rows_max <= 8 else 32)
        blocks = np.asarray([(b, r0) for b in range(len(lq)) for r0 in range(0, int(lq[b]) * group, bq)],
                            dtype=_I32).reshape(-1)
        nblocks = len(blocks) // 2
        span = int(lk.max()) if len(lk) else 0
        nsplit = 1
        sb = self.attention_split_blocks * bk
        if nblocks * hkv < self.attention_min_groups and span > sb:
            nsplit = min(-(-self.attention_min_groups // (nblocks * hkv)), -(-span // sb), MAX_SPLITS)
        split_len = _round_up(-(-span // nsplit), bk) if span else bk
        nsplit = max(1, -(-span // split_len))
        if store is None and len(self._plans) > 64:
            self._plans.clear()
        plan = cache[key] = (attn, split_kernel, nt, nblocks, nsplit, split_len, up(blocks),
                                   up(cu_q), up(cu_k))
        return plan

    def _counters(self, n: int):
        """Zeroed int32 counters for split-K merging (each merge leaves its counter at zero again)."""
        if self._counter_len < n:
            self._counter_len = _round_up(n, 1024)
            self._counter_buf = self.zeros((self._counter_len,)).buf
        return self._counter_buf

    def softmax(self, x):
        if self.rt.deferred is not None:
            self._flush()
        x = self._c(x)
        d = x.shape[-1]
        rows = x.size // d if d else 0
        y = self._empty(x.shape)
        if rows:
            with self._lock:
                self._k_softmax(self.queue, (rows * self.red,), (self.red,), x.buf, y.buf, d)
        return y

    def top_k(self, x, k):
        host = self.download(x)
        idx = np.argsort(-host, axis=-1, kind="stable")[..., :k]
        return np.take_along_axis(host, idx, -1), idx.astype(_I32)
