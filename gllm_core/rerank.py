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

import attrs
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


@attrs.frozen
class EncodedRerank:
    """One rerank request, tokenised and checked, before any forward pass: for a cross-encoder one
    (query, document) pair per document, for cosine rerank the query and then each document."""

    kind: str
    seqs: list
    raw_scores: bool = False

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids, _ in self.seqs)


def encode_request(loaded: LoadedModel, query: str, texts: Sequence[str], *, raw_scores: bool = False
                   ) -> EncodedRerank:
    """Tokenise a request the way its model reranks; a query too long for the model is refused here."""
    kind = rerank_kind(loaded)
    tokenizer = _tokenizer(loaded)
    limit = _limit(loaded)
    if kind == "cross-encoder":
        alone = len(tokenizer.encode_pairs([(query, "")], max_length=_NO_LIMIT)[0][0])
        if limit and alone >= limit:
            raise BadRequestError(f"query is {alone} tokens long with the pair's special tokens, which leaves no "
                                  f"room for a document within the model's limit of {limit} tokens; shorten the query")
        seqs = tokenizer.encode_pairs([(query, t) for t in texts], max_length=limit) if texts else []
        return EncodedRerank(kind, seqs, bool(raw_scores))
    (q,) = tokenizer.encode_batch([query], max_length=_NO_LIMIT)
    if limit and len(q[0]) > limit:
        raise BadRequestError(f"query is {len(q[0])} tokens long, over the model's limit of {limit} tokens; "
                              "the query is never truncated: shorten it")
    return EncodedRerank(kind, ([q] + tokenizer.encode_batch(list(texts))) if texts else [], bool(raw_scores))


def score_encoded(loaded: LoadedModel, requests: Sequence[EncodedRerank], batch_size: int = BATCH_SIZE
                  ) -> list[np.ndarray]:
    """The scores of each request, in document order. Several requests to one model run together,
    in one set of length-sorted batches (the server merges concurrent requests this way)."""
    flat = [seq for r in requests for seq in r.seqs]
    if not flat:
        return [np.zeros(0, dtype=np.float32) for _ in requests]
    out, start = [], 0
    if requests[0].kind == "cross-encoder":
        model = loaded.model
        logits = np.empty((len(flat), 1), dtype=np.float32)
        for chunk in length_batches([len(ids) for ids, _ in flat], batch_size, MAX_BATCH_TOKENS):
            with loaded.lock:
                logits[chunk] = model.score_pairs([flat[i][0] for i in chunk], [flat[i][1] for i in chunk])
        for r in requests:
            part = logits[start:start + len(r.seqs)]
            start += len(r.seqs)
            scores = part if r.raw_scores or not len(part) else model.activate(part)
            out.append(np.asarray(scores, dtype=np.float32)[:, 0])
        return out
    vectors = embed_sequences(loaded, flat, batch_size).astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    for r in requests:
        part = vectors[start:start + len(r.seqs)]
        start += len(r.seqs)
        out.append((part[1:] @ part[0]).astype(np.float32) if len(part) else np.zeros(0, dtype=np.float32))
    return out


def score_documents(loaded: LoadedModel, query: str, texts: Sequence[str], *, raw_scores: bool = False,
                    batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, int]:
    """The relevance score of each text, in input order, and the number of tokens read."""
    encoded = encode_request(loaded, query, texts, raw_scores=raw_scores)
    return score_encoded(loaded, [encoded], batch_size)[0], encoded.tokens


def ranking(scores: np.ndarray, top_n: int | None) -> list[int]:
    """Indices by descending score (ties keep input order), cut to ``top_n`` (None or more: all)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [int(i) for i in order[:top_n]]
