"""sentence-transformers pooling and Normalize, read from modules.json / 1_Pooling/config.json.

A plain Hugging Face BERT checkpoint (no modules.json) gets mean pooling without normalisation,
which is what sentence-transformers builds for such a checkpoint.
"""

from __future__ import annotations

import json
import os

import attrs
import numpy as np

from gllm_core.errors import CorruptFileError, UnsupportedArchitectureError

# the order in which sentence-transformers concatenates several pooled vectors
MODES = ("cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken")


@attrs.frozen
class Pooling:
    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    include_prompt: bool = True

    def __call__(self, hidden: np.ndarray, cu_seqlens: np.ndarray) -> np.ndarray:
        """hidden ``[T, H]`` of packed sequences → ``[B, H * len(modes)]``."""
        rows = []
        for b in range(len(cu_seqlens) - 1):
            h = hidden[cu_seqlens[b]:cu_seqlens[b + 1]]
            parts = []
            for mode in self.modes:
                if mode == "cls":
                    parts.append(h[0])
                elif mode == "max":
                    parts.append(h.max(axis=0))
                elif mode == "mean":
                    parts.append(h.mean(axis=0, dtype=np.float64))
                elif mode == "mean_sqrt_len":
                    parts.append(h.sum(axis=0, dtype=np.float64) / np.sqrt(len(h)))
                elif mode == "weightedmean":
                    w = np.arange(1, len(h) + 1, dtype=np.float64)[:, None]
                    parts.append((h * w).sum(axis=0) / w.sum())
                elif mode == "lasttoken":
                    parts.append(h[-1])
            rows.append(np.concatenate(parts).astype(np.float32))
        out = np.stack(rows)
        if self.normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path}: cannot read: {exc}") from None


def _pooling_modes(cfg: dict, where: str) -> tuple[str, ...]:
    """Both layouts: ``pooling_mode: "mean"`` (sentence-transformers ≥ 5) and
    ``pooling_mode_mean_tokens: true`` flags (older files, the real MiniLM)."""
    if "pooling_mode" in cfg:
        named = cfg["pooling_mode"]
        named = [named] if isinstance(named, str) else list(named or ())
        aliases = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max", "mean_sqrt_len_tokens": "mean_sqrt_len",
                   "weightedmean_tokens": "weightedmean"}
        modes = tuple(m for m in MODES if m in {aliases.get(n, n) for n in named})
        unknown = {aliases.get(n, n) for n in named} - set(MODES)
        if unknown:
            raise UnsupportedArchitectureError(f"{where}: pooling mode {sorted(unknown)} is not supported")
    else:
        flag = {"cls": "pooling_mode_cls_token", "lasttoken": "pooling_mode_lasttoken"}
        modes = tuple(m for m in MODES if cfg.get(flag.get(m, f"pooling_mode_{m}_tokens")))
    if not modes:
        raise CorruptFileError(f"{where}: no pooling mode is enabled")
    return modes


def read_pooling(folder: str) -> Pooling:
    modules_file = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules_file):
        return Pooling(("mean",), normalize=False)
    modules = _read(modules_file)
    if not isinstance(modules, list):
        raise CorruptFileError(f"{modules_file}: expected a list of modules")
    modes: tuple[str, ...] = ("mean",)
    normalize = False
    include_prompt = True
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1] if isinstance(module, dict) else ""
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            sub = str(module.get("path", ""))
            if os.path.isabs(sub) or ".." in sub.replace("\\", "/").split("/"):
                raise CorruptFileError(f"{modules_file}: module path {sub!r} leaves the model folder")
            cfg = _read(os.path.join(folder, sub, "config.json"))
            modes = _pooling_modes(cfg, f"{folder}/{sub}/config.json")
            include_prompt = bool(cfg.get("include_prompt", True))
        elif kind == "Normalize":
            normalize = True
        else:
            raise UnsupportedArchitectureError(
                f"{modules_file}: sentence-transformers module {module.get('type')!r} is not supported "
                "(supported: Transformer, Pooling, Normalize)")
    return Pooling(modes, normalize, include_prompt)
