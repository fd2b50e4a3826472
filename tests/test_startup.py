"""Start-up: ``import gllm`` and a first embedding leave generation, Jinja and asyncio unimported."""

import json
import subprocess
import sys

import pytest

import gllm

_EMBED = """
import json, sys
import gllm
client = gllm.Client(backend="numpy", home=sys.argv[2])
client.embeddings.create(model=sys.argv[1], input="the first vector")
heavy = ("jinja2", "asyncio", "gllm.chat", "gllm.completions", "gllm.async_client", "gllm_core.generation",
         "gllm_core.chat_template")
print(json.dumps([name for name in heavy if name in sys.modules]))
"""


def test_an_embedding_process_never_imports_generation(minilm_dir, tmp_path):
    run = subprocess.run([sys.executable, "-c", _EMBED, minilm_dir, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []


def test_lazy_names_resolve_on_first_use():
    from gllm.async_client import AsyncClient
    from gllm.completion_types import ChatCompletion, ChatCompletionChunk, Completion, CompletionUsage
    from gllm.completions import AsyncStream, Stream

    expected = {"AsyncClient": AsyncClient, "ChatCompletion": ChatCompletion, "ChatCompletionChunk": ChatCompletionChunk,
                "Completion": Completion, "CompletionUsage": CompletionUsage, "AsyncStream": AsyncStream,
                "Stream": Stream}
    for name, value in expected.items():
        assert getattr(gllm, name) is value and name in gllm.__all__ and name in dir(gllm)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        gllm.Nope  # noqa: B018


def test_client_builds_chat_and_completions_once(tmp_path):
    from gllm.chat import Chat
    from gllm.completions import Completions

    client = gllm.Client(backend="numpy", home=tmp_path)
    assert isinstance(client.chat, Chat) and client.chat is client.chat
    assert isinstance(client.completions, Completions) and client.completions is client.completions
