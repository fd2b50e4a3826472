"""Rerank requests on a loaded model: score documents against a query, sort, keep the top ``n``.

Two kinds of model rerank:

* A cross-encoder (a model whose ``tasks`` include ``"rerank"``) reads each (query, document)
  pair as it was trained (``[CLS] q [SEP] d [SEP]`` with token type ids, or XLM-R's
  ``<s> q </s></s> d </s>``, from the tokenizer's pair template). A long pair is cut on the
  document side only; a query that alone leaves no room for a document is refused. The score is
  the activation sentence-transformers' CrossEncoder applies for that checkpoint (sigmoid for
  one label unless the checkpoint says otherwise), or the raw logit with ``raw_scores``.
  Such a model provides ``num_labels``, ``max_positions``,
  ``score_pairs(ids_list, type_ids_list) -> float32 [B, num_labels]`` (logits) and
  ``activate(logits) -> scores``. Only single-label models rerank, as in CrossEncoder.rank.
* An embedding model (``tasks`` include ``"embed"``) scores each document by the cosine
  similarity of its embedding with the query's, so any embedding model can rerank. Documents are
  cut at the model's maximum length, as for embeddings; the query is never cut.

Many documents are scored in batches of similar length.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .batching import length_batches
from .embedding import BATCH_SIZE, MAX_BATCH_TOKENS, embed_sequences
from .errors import BadRequestError
from .loader import LoadedModel

_NO_LIMIT = 1 << 30  # "do not truncate" for a tokenizer call that measures a whole text


def check_query(query: Any) -> str:
    if not isinstance(query, str) or not query:
        raise BadRequestError(f"query must be a non-empty string, got {query!r:.80}")
    return query


def document_texts(documents: Any) -> list[str]:
    """``documents`` (a list of strings, or of dicts with a string ``"text"``) → their texts."""
    if isinstance(documents, (str, bytes, dict)) or not isinstance(documents, (list, tuple)):
        raise BadRequestError(f"documents must be a list of strings or of {{'text': ...}} dicts, "
                              f"got {type(documents).__name__}")
    texts = []
    for i, doc in enumerate(documents):
        if isinstance(doc, str):
            texts.append(doc)
        elif isinstance(doc, dict):
            if "text" not in doc:
                raise BadRequestError(f"documents[{i}] is a dict without a 'text' field "
                                      f"(fields: {', '.join(map(str, doc)) or 'none'})")
            if not isinstance(doc["text"], str):
                raise BadRequestError(f"documents[{i}]['text'] must be a string, got {type(doc['text']).__name__}")
            texts.append(doc["text"])
        else:
            raise BadRequestError(f"documents[{i}] must be a string or a dict with a 'text' field, "
                                  f"got {type(doc).__name__}")
    return texts


def check_top_n(top_n: Any) -> int | None:
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise BadRequestError(f"top_n must be a positive integer or None, got {top_n!r}")
    return int(top_n)


def rerank_kind(loaded: LoadedModel) -> str:
    """``"cross-encoder"`` or ``"cosine"``: how this model reranks."""
    if "rerank" in loaded.tasks:
        if getattr(loaded.model, "num_labels", 1) != 1:
            raise BadRequestError(f"model {loaded.name!r} has {loaded.model.num_labels} labels; reranking needs a "
                                  "cross-encoder with one relevance label")
        return "cross-encoder"
    if "embed" in loaded.tasks:
        return "cosine"
    raise BadRequestError(f"model {loaded.name!r} ({loaded.architecture}) can neither rerank nor embed")


def _limit(loaded: LoadedModel) -> int | None:
    limits = [x for x in (getattr(loaded.tokenizer, "max_length", None),
                          getattr(loaded.model, "max_positions", None)) if x]
    return min(limits) if limits else None


def _tokenizer(loaded: LoadedModel):
    if loaded.tokenizer is None:
        raise BadRequestError(f"model {loaded.name!r} has no tokenizer, so it cannot read a query and documents")
    return loaded.tokenizer


def score_documents(loaded: LoadedModel, query: str, texts: Sequence[str], *, raw_scores: bool = False,
                    batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, int]:
    """The relevance score of each text, in input order, and the number of tokens read."""
    kind = rerank_kind(loaded)
    tokenizer = _tokenizer(loaded)
    limit = _limit(loaded)
    if kind == "cross-encoder":
        return _cross_encoder_scores(loaded, tokenizer, limit, query, texts, raw_scores, batch_size)
    return _cosine_scores(loaded, tokenizer, limit, query, texts, batch_size)


def _cross_encoder_scores(loaded, tokenizer, limit, query, texts, raw_scores, batch_size):
    alone = len(tokenizer.encode_pairs([(query, "")], max_length=_NO_LIMIT)[0][0])
    if limit and alone >= limit:
        raise BadRequestError(f"query is {alone} tokens long with the pair's special tokens, which leaves no room "
                              f"for a document within the model's limit of {limit} tokens; shorten the query")
    if not texts:
        return np.zeros(0, dtype=np.float32), 0
    pairs = tokenizer.encode_pairs([(query, t) for t in texts], max_length=limit)
    logits = np.empty((len(pairs), 1), dtype=np.float32)
    model = loaded.model
    for chunk in length_batches([len(ids) for ids, _ in pairs], batch_size, MAX_BATCH_TOKENS):
        with loaded.lock:
            logits[chunk] = model.score_pairs([pairs[i][0] for i in chunk], [pairs[i][1] for i in chunk])
    scores = logits if raw_scores else model.activate(logits)
    return np.asarray(scores, dtype=np.float32)[:, 0], sum(len(ids) for ids, _ in pairs)


def _cosine_scores(loaded, tokenizer, limit, query, texts, batch_size):
    (q,) = tokenizer.encode_batch([query], max_length=_NO_LIMIT)
    if limit and len(q[0]) > limit:
        raise BadRequestError(f"query is {len(q[0])} tokens long, over the model's limit of {limit} tokens; "
                              "the query is never truncated: shorten it")
    if not texts:
        return np.zeros(0, dtype=np.float32), 0
    docs = tokenizer.encode_batch(list(texts))
    vectors = embed_sequences(loaded, [q] + docs, batch_size).astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return (vectors[1:] @ vectors[0]).astype(np.float32), sum(len(ids) for ids, _ in [q] + docs)


def ranking(scores: np.ndarray, top_n: int | None) -> list[int]:
    """Indices by descending score (ties keep input order), cut to ``top_n`` (None or more: all)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [int(i) for i in order[:top_n]]
