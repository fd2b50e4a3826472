"""Response objects in the shapes of the OpenAI Python SDK (rerank: Cohere / Jina), as attrs classes."""

from __future__ import annotations

from typing import Any

import attrs


class _Model:
    def model_dump(self) -> dict[str, Any]:
        """A plain dict, as ``openai``'s pydantic models give."""
        return attrs.asdict(self, recurse=True)

    to_dict = model_dump

    def model_dump_json(self) -> str:
        import json

        return json.dumps(self.model_dump())


@attrs.define
class Embedding(_Model):
    embedding: list[float] | str
    index: int
    object: str = "embedding"


@attrs.define
class EmbeddingUsage(_Model):
    prompt_tokens: int
    total_tokens: int


@attrs.define
class CreateEmbeddingResponse(_Model):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: str = "list"


@attrs.define
class RerankResult(_Model):
    """One ranked document (Cohere / Jina shape): ``document`` is ``{"text": ...}`` (a dict
    document as given), or None when the request said ``return_documents=False``."""

    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


@attrs.define
class RerankUsage(_Model):
    prompt_tokens: int
    total_tokens: int


@attrs.define
class RerankResponse(_Model):
    """Results sorted by descending ``relevance_score``."""

    id: str
    results: list[RerankResult]
    model: str
    usage: RerankUsage
