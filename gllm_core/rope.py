"""Rotary position embedding parameters: inverse frequencies and attention factor per RoPE type.

Mirrors transformers' ``modeling_rope_utils.py`` (default, linear, dynamic NTK, YaRN, LongRoPE,
Llama 3) in numpy, in float32 where transformers computes in float32, so the angles agree with
the reference to the last bit or so. The rotation itself is the backend's ``rope`` op.

Config layouts read: transformers ≥ 5 ``rope_parameters: {rope_type, rope_theta, ...}`` and the
older ``rope_theta`` + ``rope_scaling: {type | rope_type, factor, ...}`` that released checkpoints
carry.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import CorruptFileError, UnsupportedArchitectureError

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")
# types whose frequencies depend on the sequence length reached
LENGTH_DEPENDENT = ("dynamic", "longrope")


def rope_parameters(config) -> dict:
    """One flat dict with ``rope_type`` and ``rope_theta`` (+ the type's own keys), as transformers'
    ``standardize_rope_params`` leaves it. ``config`` is a ``ModelConfig``."""
    raw = config.raw
    where = f"{config.path or '<config>'}/config.json"
    params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise CorruptFileError(f"{where}: rope_scaling / rope_parameters must be an object, got {params!r}")
    if any(isinstance(v, dict) for v in params.values()):
        raise UnsupportedArchitectureError(f"{where}: per-layer-type rope parameters are not supported")
    params = dict(params)
    params.setdefault("rope_type", params.get("type") or "default")
    if params["rope_type"] == "su":  # the name LongRoPE had in the first Phi-3 configs
        params["rope_type"] = "longrope"
    theta = params.get("rope_theta", raw.get("rope_theta", 10000.0))
    params["rope_theta"] = theta
    if "partial_rotary_factor" in raw and "partial_rotary_factor" not in params:
        params["partial_rotary_factor"] = raw["partial_rotary_factor"]
    if params["rope_type"] in ("llama3", "yarn", "longrope"):
        if "original_max_position_embeddings" in raw:
            params["original_max_position_embeddings"] = raw["original_max_position_embeddings"]
        else:
            params.setdefault("original_max_position_embeddings", config.max_position_embeddings)
    if params["rope_type"] not in ROPE_TYPES:
        raise UnsupportedArchitectureError(
            f"{where}: rope type {params['rope_type']!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
    return params


def _number(params: dict, key: str, where: str, default=None) -> float:
    value = params.get(key, default)
    if value is None and default is None:
        raise CorruptFileError(f"{where}: rope {params['rope_type']!r} needs {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CorruptFileError(f"{where}: rope field {key!r} must be a number, got {value!r}")
    return value


def _base_inv_freq(base: float, dim: int) -> np.ndarray:
    # torch: base ** (arange(0, dim, 2).float() / dim), all float32
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return (np.float32(1.0) / np.power(np.float64(base), exponents.astype(np.float64)).astype(np.float32))


def compute_rope(params: dict, head_dim: int, max_position_embeddings: int, seq_len: int | None = None,
                 where: str = "config.json") -> tuple[np.ndarray, float]:
    """``(inv_freq float32 [rotary_dim/2], attention_factor)`` for the standardised ``params``.

    ``seq_len`` matters only for the length-dependent types (dynamic NTK, LongRoPE): it is the
    length the sequence has reached, as transformers' ``dynamic_rope_update`` sees it."""
    rope_type = params["rope_type"]
    base = _number(params, "rope_theta", where)
    if base <= 0:
        raise CorruptFileError(f"{where}: rope_theta must be positive, got {base!r}")
    partial = _number(params, "partial_rotary_factor", where, 1.0)
    dim = int(head_dim * partial)
    if dim < 2 or dim > head_dim or dim % 2:
        raise CorruptFileError(f"{where}: rotary dimension {dim} (head_dim {head_dim} × partial_rotary_factor "
                               f"{partial}) must be even and between 2 and head_dim")
    if rope_type == "default":
        return _base_inv_freq(base, dim), 1.0

    if rope_type == "linear":
        factor = _number(params, "factor", where)
        return (_base_inv_freq(base, dim) / np.float32(factor)).astype(np.float32), 1.0

    if rope_type == "dynamic":
        factor = _number(params, "factor", where)
        seq_len = max(seq_len or 0, max_position_embeddings)
        base = base * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
        return _base_inv_freq(base, dim), 1.0

    if rope_type == "llama3":
        inv_freq = _base_inv_freq(base, dim)
        factor = np.float32(_number(params, "factor", where))
        low_freq_factor = _number(params, "low_freq_factor", where)
        high_freq_factor = _number(params, "high_freq_factor", where)
        if high_freq_factor <= low_freq_factor:
            raise CorruptFileError(f"{where}: rope high_freq_factor must exceed low_freq_factor")
        old_context_len = _number(params, "original_max_position_embeddings", where)
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = (np.float32(2 * math.pi) / inv_freq).astype(np.float32)
        inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
        smooth = ((np.float32(old_context_len) / wavelen - np.float32(low_freq_factor))
                  / np.float32(high_freq_factor - low_freq_factor)).astype(np.float32)
        smoothed = ((1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama).astype(np.float32)
        medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        return np.where(medium, smoothed, inv_freq_llama).astype(np.float32), 1.0

    if rope_type == "yarn":
        original = _number(params, "original_max_position_embeddings", where)
        factor = params.get("factor")
        factor = max_position_embeddings / original if factor is None else _number(params, "factor", where)
        attention_factor = params.get("attention_factor")
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")

        def get_mscale(scale, m=1.0):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        if attention_factor is None:
            if mscale and mscale_all_dim:
                attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
            else:
                attention_factor = get_mscale(factor)
        beta_fast = params.get("beta_fast") or 32
        beta_slow = params.get("beta_slow") or 1

        def correction_dim(num_rotations):
            return (dim * math.log(original / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if params.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # as transformers: avoid a zero-width ramp
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
        extrapolation_factor = (1 - ramp).astype(np.float32)
        exps = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
        pos_freqs = np.power(np.float64(base), exps.astype(np.float64)).astype(np.float32)
        inv_extrapolation = (np.float32(1.0) / pos_freqs).astype(np.float32)
        inv_interpolation = (np.float32(1.0) / (np.float32(factor) * pos_freqs)).astype(np.float32)
        inv_freq = inv_interpolation * (1 - extrapolation_factor) + inv_extrapolation * extrapolation_factor
        return inv_freq.astype(np.float32), float(attention_factor)

    if rope_type == "longrope":
        original = _number(params, "original_max_position_embeddings", where)
        factor = params.get("factor")
        factor = max_position_embeddings / original if factor is None else _number(params, "factor", where)
        attention_factor = params.get("attention_factor")
        if attention_factor is None:
            attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
        key = "long_factor" if seq_len and seq_len > original else "short_factor"
        ext = np.asarray(params.get(key), dtype=np.float32) if params.get(key) is not None else None
        if ext is None or ext.shape != (dim // 2,):
            raise CorruptFileError(f"{where}: rope {key!r} must be a list of {dim // 2} numbers")
        exps = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
        powers = np.power(np.float64(base), exps.astype(np.float64)).astype(np.float32)
        return (np.float32(1.0) / (ext * powers)).astype(np.float32), float(attention_factor)

    raise UnsupportedArchitectureError(f"{where}: rope type {rope_type!r} is not supported")


class Rotary:
    """What an attention layer needs to rotate its queries and keys.

    ``at(seq_len)`` gives ``(inv_freq, attention_factor)`` for a sequence that has reached
    ``seq_len`` tokens; it is the same for every length unless ``length_dependent``."""

    def __init__(self, config, head_dim: int | None = None, style: str = "neox"):
        if style not in ("neox", "interleaved"):
            raise ValueError(f"rope style {style!r}")
        self.params = rope_parameters(config)
        self.head_dim = int(head_dim or config.head_dim)
        self.max_position_embeddings = int(config.max_position_embeddings or 0)
        self.where = f"{config.path or '<config>'}/config.json"
        self.style = style
        self.length_dependent = self.params["rope_type"] in LENGTH_DEPENDENT
        if self.length_dependent and self.max_position_embeddings <= 0:
            raise CorruptFileError(f"{self.where}: rope {self.params['rope_type']!r} needs max_position_embeddings")
        self._static = compute_rope(self.params, self.head_dim, self.max_position_embeddings, None, self.where)
        self.rotary_dim = 2 * self._static[0].shape[0]

    def key(self, seq_len: int):
        """Sequences with equal keys share frequencies (and can run in one batch)."""
        if not self.length_dependent:
            return None
        if self.params["rope_type"] == "dynamic":
            return max(seq_len, self.max_position_embeddings)
        return seq_len > self.params["original_max_position_embeddings"]

    def at(self, seq_len: int) -> tuple[np.ndarray, float]:
        if not self.length_dependent:
            return self._static
        return compute_rope(self.params, self.head_dim, self.max_position_embeddings, seq_len, self.where)
