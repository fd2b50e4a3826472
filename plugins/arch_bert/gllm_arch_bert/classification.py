"""Cross-encoders: BertForSequenceClassification and XLMRobertaForSequenceClassification.

A cross-encoder reads ``[CLS] query [SEP] document [SEP]`` (XLM-R: ``<s> q </s></s> d </s>``) and
its classification head turns the first token's hidden state into ``num_labels`` logits:

* BERT:  ``classifier(tanh(pooler.dense(h[CLS])))``
* XLM-R: ``classifier.out_proj(tanh(classifier.dense(h[<s>])))``

The score a user sees is the activation sentence-transformers' CrossEncoder applies to those
logits for the same checkpoint (``read_activation``); ``score_pairs`` returns the raw logits.
"""

from __future__ import annotations

import json
import os

import numpy as np

from gllm_core.errors import CorruptFileError, UnsupportedArchitectureError
from gllm_core.nn import Linear

from .model import BertEncoder, roberta_padding_idx

# CrossEncoder stores its activation as the dotted path of a torch module; we map the ones it
# ships with and never import anything named in a model file.
ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}
_APPLY = {
    "sigmoid": lambda x: 0.5 * (np.tanh(0.5 * x) + 1.0),  # = 1 / (1 + exp(-x)), without overflow
    "identity": lambda x: x,
    "tanh": np.tanh,
}


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path}: cannot read: {exc}") from None


def _resolve(path, where: str) -> str | None:
    """A dotted torch path → our activation name; None for a path CrossEncoder would not trust."""
    if not isinstance(path, str):
        raise CorruptFileError(f"{where}: activation_fn must be a string, got {path!r}")
    if not path.startswith("torch."):
        return None  # CrossEncoder ignores it without trust_remote_code and uses its default
    if path not in ACTIVATIONS:
        raise UnsupportedArchitectureError(f"{where}: activation_fn {path!r} is not supported "
                                           f"(supported: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[path]


def read_activation(folder: str, raw_config: dict, num_labels: int) -> str:
    """The activation CrossEncoder (sentence-transformers 6) applies to this checkpoint's logits.

    In its order: ``activation_fn`` of config_sentence_transformers.json in a folder that
    CrossEncoder saved (modules.json present, model_type "CrossEncoder"); else config.json's
    ``sentence_transformers.activation_fn``; else config.json's older
    ``sbert_ce_default_activation_function``; else sigmoid for one label and identity for more.
    """
    st_file = os.path.join(folder, "config_sentence_transformers.json")
    if os.path.isfile(os.path.join(folder, "modules.json")) and os.path.isfile(st_file):
        st = _read_json(st_file)
        if isinstance(st, dict) and st.get("model_type") == "CrossEncoder" and st.get("activation_fn") is not None:
            found = _resolve(st["activation_fn"], st_file)
            if found:
                return found
    where = os.path.join(folder, "config.json")
    block = raw_config.get("sentence_transformers")
    path = None
    if isinstance(block, dict) and "activation_fn" in block:
        path = block["activation_fn"]
    elif raw_config.get("sbert_ce_default_activation_function") is not None:
        path = raw_config["sbert_ce_default_activation_function"]
    if path is not None:
        found = _resolve(path, where)
        if found:
            return found
    return "sigmoid" if num_labels == 1 else "identity"


class ClassificationHead:
    """``out(tanh(dense(h)))`` on the first token of each sequence."""

    def __init__(self, backend, weights, dense: str, out: str):
        get = weights.get
        self.dense = Linear(backend, get(dense + ".weight"), get(dense + ".bias"))
        self.out = Linear(backend, get(out + ".weight"), get(out + ".bias"))
        if self.dense.in_features != self.dense.out_features or self.out.in_features != self.dense.out_features:
            raise CorruptFileError(f"{weights.path}: {dense}.weight {self.dense.out_features}x{self.dense.in_features} "
                                   f"and {out}.weight {self.out.out_features}x{self.out.in_features} do not chain")
        self.num_labels = self.out.out_features
        b = backend
        self._take_rows, self._download, self._upload = b.take_rows, b.download, b.upload

    def __call__(self, hidden, cu_seqlens: np.ndarray) -> np.ndarray:
        first = self._take_rows(hidden, cu_seqlens[:-1])
        # tanh is not a backend op; the head works on B rows, so it runs on the host
        pooled = np.tanh(self._download(self.dense(first)))
        return self._download(self.out(self._upload(pooled.astype(np.float32))))


class CrossEncoderModel:
    """Scores (query, document) pairs: ``score_pairs`` → logits ``[B, num_labels]``."""

    tasks = ("rerank",)

    def __init__(self, encoder: BertEncoder, head: ClassificationHead, activation: str):
        self.encoder = encoder
        self.head = head
        self.num_labels = head.num_labels
        self.activation = activation
        self.max_positions = encoder.max_positions

    def score_pairs(self, ids_list, type_ids_list=None) -> np.ndarray:
        """Token ids of encoded pairs (and their token type ids) → raw logits, float32 ``[B, num_labels]``."""
        hidden, cu = self.encoder.forward(ids_list, type_ids_list)
        return np.asarray(self.head(hidden, cu), dtype=np.float32).reshape(len(ids_list), self.num_labels)

    def activate(self, logits: np.ndarray) -> np.ndarray:
        """The checkpoint's CrossEncoder activation applied to ``score_pairs`` logits."""
        return _APPLY[self.activation](np.asarray(logits, dtype=np.float64)).astype(np.float32)


def build_cross_encoder(config, weights, backend) -> CrossEncoderModel:
    folder = config.path if os.path.isdir(config.path) else os.path.dirname(config.path)
    pad = roberta_padding_idx(config)
    if pad is not None:
        encoder = BertEncoder(config, weights, backend, padding_idx=pad)
        head = ClassificationHead(backend, weights, "classifier.dense", "classifier.out_proj")
    else:
        encoder = BertEncoder(config, weights, backend)
        prefix = next((n[: -len("pooler.dense.weight")] for n in weights.names() if n.endswith("pooler.dense.weight")),
                      None)
        if prefix is None:
            raise CorruptFileError(f"{weights.path}: no tensor named '*pooler.dense.weight': "
                                   "BertForSequenceClassification needs its pooler")
        head = ClassificationHead(backend, weights, prefix + "pooler.dense", "classifier")
    return CrossEncoderModel(encoder, head, read_activation(folder, config.raw, head.num_labels))
