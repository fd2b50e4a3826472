"""Embedding requests on a loaded model: tokenise, batch by length, pool, truncate dimensions."""

from __future__ import annotations

import base64
from typing import Sequence

import numpy as np

from .batching import length_batches
from .errors import BadRequestError
from .loader import LoadedModel

BATCH_SIZE = 32
MAX_BATCH_TOKENS = 16384  # bounds activation memory when inputs are thousands of tokens long


def tokenize_inputs(loaded: LoadedModel, inputs) -> list[tuple[list[int], list[int]]]:
    """OpenAI ``input`` (str | list[str] | list[int] | list[list[int]]) → (ids, type_ids) each.

    Texts are cut at the model's maximum length, as sentence-transformers does; token ids are
    used as given and must fit that length."""
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)) or len(inputs) == 0:
        raise BadRequestError("input must be a non-empty string, list of strings, list of token ids "
                              "or list of lists of token ids")
    if all(isinstance(x, str) for x in inputs):
        if loaded.tokenizer is None:
            raise BadRequestError(f"model {loaded.name!r} has no tokenizer: pass token ids")
        return loaded.tokenizer.encode_batch(list(inputs))
    if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in inputs):
        inputs = [inputs]
    seqs = []
    limit = getattr(loaded.tokenizer, "max_length", None) or loaded.config.max_position_embeddings
    vocab = loaded.config.vocab_size
    for i, seq in enumerate(inputs):
        if not isinstance(seq, (list, tuple)) or not seq or not all(
                isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in seq):
            raise BadRequestError(f"input[{i}] must be a string or a non-empty list of token ids; "
                                  "do not mix strings and token ids")
        if vocab and any(t < 0 or t >= vocab for t in seq):
            raise BadRequestError(f"input[{i}] has token ids outside the vocabulary [0, {vocab})")
        if limit and len(seq) > limit:
            raise BadRequestError(f"input[{i}] has {len(seq)} tokens, over the model's limit of {limit}")
        seqs.append((list(map(int, seq)), [0] * len(seq)))
    return seqs


def embed_sequences(loaded: LoadedModel, seqs: Sequence[tuple[list[int], list[int]]],
                    batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Embed token sequences in batches of similar length; rows come back in input order."""
    model = loaded.model
    if "embed" not in loaded.tasks:
        raise BadRequestError(f"model {loaded.name!r} ({loaded.architecture}) does not make embeddings")
    out: np.ndarray | None = None
    for chunk in length_batches([len(ids) for ids, _ in seqs], batch_size, MAX_BATCH_TOKENS):
        with loaded.lock:
            vectors = model.embed([seqs[i][0] for i in chunk], [seqs[i][1] for i in chunk])
        if out is None:
            out = np.empty((len(seqs), vectors.shape[1]), dtype=np.float32)
        out[chunk] = vectors
    return out


def shorten(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Keep the first ``dimensions`` components and renormalise (Matryoshka truncation)."""
    if dimensions is None:
        return vectors
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= vectors.shape[1]:
        raise BadRequestError(f"dimensions must be an integer from 1 to {vectors.shape[1]}, got {dimensions!r}")
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return (cut / np.maximum(norms, 1e-12)).astype(np.float32)


def encode_base64(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_base64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")
