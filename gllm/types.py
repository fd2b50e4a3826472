"""Response objects in the shapes of the OpenAI Python SDK (attrs classes)."""

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
