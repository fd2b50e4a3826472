"""The GGUF weight source: tensors under the Hugging Face names the architectures use, and the config.

Mapped tensors are handed out under their HF names (``model.layers.3.self_attn.q_proj.weight``);
tensors without a mapping keep their GGUF name. Stacked expert tensors (``blk.N.ffn_up_exps``,
``[n_expert, out, in]``) are handed out per expert (``model.layers.N.mlp.experts.E.up_proj.weight``)
as views. Dense tensors stay memory-mapped; quantized ones are ``WeightMatrix`` objects over their
raw blocks, one row of blocks per matrix row, so nothing is dequantised until a backend asks.
"""

from __future__ import annotations

import os
import re
import threading
import weakref

import numpy as np

from gllm_core.config import ModelConfig
from gllm_core.errors import CorruptFileError, UnsupportedFormatError
from gllm_core.weights import WeightMatrix, WeightVector

from .families import Family, family_for, hf_config, hf_tensor_name
from .reader import GGUFFile, MetadataArray, TensorInfo

_cache: "weakref.WeakValueDictionary[tuple, GGUFFile]" = weakref.WeakValueDictionary()
_cache_lock = threading.Lock()


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """A parsed GGUFFile, shared while anyone holds it (weights and tokenizer read the same file)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read: {exc}") from exc
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            found = GGUFFile(path)
            _cache[key] = found
        return found


def unpermute_rows(data: np.ndarray, n_head: int, name: str) -> np.ndarray:
    """Undo llama.cpp's ``LlamaModel.permute`` on the rows of a Q or K weight (or bias).

    The converter reordered each head's rows from (half, pair) to (pair, half) order so that
    ggml's interleaved RoPE applies; this puts them back in the rotate-half order of HF."""
    rows = data.shape[0]
    if n_head <= 0 or rows % (2 * n_head):
        raise CorruptFileError(f"{name}: {rows} rows cannot be split into {n_head} heads of pairs")
    half = rows // n_head // 2
    out = np.asarray(data).reshape((n_head, half, 2) + data.shape[1:]).swapaxes(1, 2)
    return np.ascontiguousarray(out.reshape(data.shape))


_QK = re.compile(r"^blk\.\d+\.attn_([qk])\.(weight|bias)$")


class GGUFSource:
    """A WeightSource over one GGUF file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.file = open_gguf(self.path)
        self.metadata = self.file.metadata
        self.family: Family | None = family_for(self.metadata)
        self._map: dict[str, tuple[str, int | None]] = {}
        for name, info in self.file.tensors.items():
            hf = hf_tensor_name(self.family, name)
            if hf is None:
                self._add(name, name, None)
            elif "{e}" in hf:
                if len(info.shape) != 3:
                    raise CorruptFileError(f"{self.path}: expert tensor {name!r} has shape {list(info.shape)}, "
                                           f"expected [experts, out, in]")
                for e in range(info.shape[0]):
                    self._add(hf.format(e=e), name, e)
            else:
                self._add(hf, name, None)

    def _add(self, hf: str, name: str, expert: int | None) -> None:
        if hf in self._map:
            raise CorruptFileError(f"{self.path}: tensors {self._map[hf][0]!r} and {name!r} both map to {hf!r}")
        self._map[hf] = (name, expert)

    # -- WeightSource ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._map)

    def __contains__(self, name: str) -> bool:
        return name in self._map

    def __iter__(self):
        return iter(self._map)

    def gguf_name(self, name: str) -> str:
        """The name the file stores a tensor under."""
        return self._lookup(name)[0]

    def _lookup(self, name: str) -> tuple[str, int | None]:
        try:
            return self._map[name]
        except KeyError:
            raise CorruptFileError(f"{self.path}: no tensor named {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        """A tensor as stored (numpy order; block-quantized types as uint8 rows of blocks)."""
        gname, expert = self._lookup(name)
        data = self.file.array(gname)
        return data if expert is None else data[expert]

    def get(self, name: str) -> WeightMatrix | WeightVector:
        gname, expert = self._lookup(name)
        info: TensorInfo = self.file.tensors[gname]
        t = info.type
        data = self.file.array(gname)
        shape = info.shape
        if expert is not None:
            data, shape = data[expert], shape[1:]
        if t.dense is None and t.dequantize is None:
            raise UnsupportedFormatError(f"{self.path}: tensor {gname!r} is stored as {t.name}, which gllm "
                                         f"cannot compute with (supported: f32, f16, bf16, q4_0, q4_1, q5_0, "
                                         f"q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k)")
        m = _QK.match(gname)
        if m and self.family is not None and self.family.permuted_qk:
            arch = self.metadata.get("general.architecture")
            key = "head_count" if m.group(1) == "q" else "head_count_kv"
            n_head = self.metadata.get(f"{arch}.attention.{key}") or self.metadata.get(f"{arch}.attention.head_count")
            if not isinstance(n_head, int):
                raise CorruptFileError(f"{self.path}: {arch}.attention.{key} is missing; cannot restore {gname!r}")
            data = unpermute_rows(data, n_head, f"{self.path}: {gname}")
        if len(shape) == 1:
            if t.dense is None:
                raise UnsupportedFormatError(f"{self.path}: vector {gname!r} is stored as {t.name}; "
                                             f"expected f32, f16 or bf16")
            return WeightVector(name, data, t.dense)
        rows = int(np.prod(shape[:-1]))
        data = data.reshape((rows, data.shape[-1]))
        return WeightMatrix(name, data, t.dense or t.name, (rows, shape[-1]), t.quant)

    def close(self) -> None:
        pass  # the mapping goes with the last array that views it

    # -- config ------------------------------------------------------------------------------------
    def vocab_size(self) -> int:
        arch = self.metadata.get("general.architecture")
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, MetadataArray):
            return len(tokens)
        declared = self.metadata.get(f"{arch}.vocab_size")
        if isinstance(declared, int) and not isinstance(declared, bool):
            return declared
        embd = self.file.tensors.get("token_embd.weight")
        return int(embd.shape[0]) if embd is not None else 0

    def model_config(self) -> ModelConfig:
        """The model's config, as its Hugging Face config.json would give it, with the GGUF scalars in ``raw``."""
        md = self.metadata
        arch = md.get("general.architecture")
        if not isinstance(arch, str):
            raise CorruptFileError(f"{self.path}: general.architecture is missing or not a string")
        if self.family is not None:
            hf = hf_config(self.family, md, set(self.file.tensors), self.vocab_size())
        else:  # no table row: the architecture plugin reads the GGUF keys from raw itself
            hf = {"model_type": arch, "vocab_size": self.vocab_size()}
        scalars = {k: v for k, v in md.items() if not isinstance(v, MetadataArray)}
        try:
            config = ModelConfig.from_dict(hf, path=self.path)
        except CorruptFileError as exc:
            raise CorruptFileError(f"{self.path}: metadata gives a bad config: {exc}") from None
        config.raw.update(scalars)
        config.raw["gguf_family"] = self.family.gguf_arch if self.family else None
        return config
