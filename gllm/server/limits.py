"""What one server accepts: the limits enforced on every request, each a ``gllm serve`` option."""

from __future__ import annotations

import attrs

from gllm_core.errors import BadRequestError


def _positive(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequestError(f"server limit {attribute.name} must be a positive integer, got {value!r}")


def _limit(default: int, help: str):
    return attrs.field(default=default, validator=_positive, metadata={"help": help})


@attrs.frozen
class Limits:
    """Each limit is set by the ``gllm serve`` option of its name (``--max-tokens`` for ``max_tokens``)."""

    max_concurrent_sequences: int = _limit(
        32, "sequences generating at once per model; later requests wait in the queue")
    max_queued_requests: int = _limit(
        256, "requests waiting per model beyond the running ones; past this the server answers 429")
    max_tokens: int = _limit(
        2048, "the most tokens one completion may generate (also the default when a request names none)")
    max_input_tokens: int = _limit(
        32768, "the most input tokens of one request: a prompt, or all inputs of an embeddings/rerank request")
    max_inputs: int = _limit(
        2048, "the most inputs of one embeddings request, or documents of one rerank request")
    max_body_bytes: int = _limit(
        8 * 1024 * 1024, "the most bytes of one request body (413 past it)")
    max_batch_inputs: int = _limit(
        64, "embedding/rerank inputs merged into one forward batch")

    @staticmethod
    def option(name: str) -> str:
        """The command-line option that sets a limit: ``max_tokens`` → ``--max-tokens``."""
        return "--" + name.replace("_", "-")
