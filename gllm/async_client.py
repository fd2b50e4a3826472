"""``gllm.AsyncClient``: the same surface as ``Client``, awaited; compute runs off the event loop."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .builder import RequestBuilder
from .chat import AsyncChat
from .completions import AsyncCompletions
from .client import Client


class AsyncClient:
    def __init__(self, backend: str = "auto", *, max_workers: int = 4, **kwargs: Any):
        self._sync = Client(backend, **kwargs)
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="gllm")
        self.backend_name = self._sync.backend_name
        self.embeddings = AsyncEmbeddings(self)
        self.chat = AsyncChat(self)
        self.completions = AsyncCompletions(self)
        self.rerank = AsyncRerank(self)

    async def _run(self, fn, /, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def load(self, model: str):
        return await self._run(self._sync.load, model)

    async def close(self) -> None:
        self._sync.close()
        self._executor.shutdown(wait=False)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


class _AsyncBuilder(RequestBuilder):
    async def generate(self):
        return await self._send(**self._values)


class AsyncEmbeddings:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def create(self, **kwargs):
        return await self._client._run(self._client._sync.embeddings.create, **kwargs)

    def builder(self, **fields) -> _AsyncBuilder:
        return _AsyncBuilder(self.create, self._client._sync.embeddings.FIELDS, **fields)


class AsyncRerank:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def create(self, **kwargs):
        return await self._client._run(self._client._sync.rerank.create, **kwargs)

    def builder(self, **fields) -> _AsyncBuilder:
        return _AsyncBuilder(self.create, self._client._sync.rerank.FIELDS, **fields)
