"""Micro-batching: concurrent requests to one model run together in one forward batch.

Each request hands in its list of inputs and awaits its results. One worker task per model takes
every request waiting when the model comes free (up to ``max_batch`` inputs, never splitting a
request), runs them as one batch in a worker thread, and hands each request its own slice back.
Requests that arrive while a batch runs simply make up the next one: no timer, no added delay.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import Executor
from typing import Any, Callable, Sequence

import attrs

from .errors import unavailable


@attrs.define(eq=False)
class _Job:
    items: Sequence[Any]
    future: asyncio.Future
    weight: int  # inputs it adds to a batch


class MicroBatcher:
    """``await batcher.submit(items)`` → ``run(items)``'s results, computed in a merged batch."""

    def __init__(self, name: str, run: Callable[[list], Sequence[Any]], *, max_batch: int, executor: Executor):
        self.name = name
        self._run = run
        self._max_batch = max_batch
        self._executor = executor
        self._pending: collections.deque[_Job] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closed = False
        self.batches_run = 0  # forward batches so far
        self.requests_run = 0  # requests answered through them
        self.running = 0  # requests in the batch being computed now

    @property
    def pending(self) -> int:
        """Requests waiting for the next batch."""
        return len(self._pending)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work(), name=f"gllm-batcher-{self.name}")

    async def stop(self) -> None:
        """Refuse new requests, fail the waiting ones with 503, and end the worker."""
        self._closed = True
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(unavailable("the server is shutting down"))
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, items: Sequence[Any], weight: int | None = None) -> list[Any]:
        """``run``'s results for ``items``; ``weight`` (default: one per item) counts toward ``max_batch``."""
        if self._closed or self._task is None:
            raise unavailable("the server is shutting down")
        job = _Job(items, asyncio.get_running_loop().create_future(), len(items) if weight is None else weight)
        self._pending.append(job)
        self._wake.set()
        return await job.future

    def _take(self) -> list[_Job]:
        jobs, size = [], 0
        while self._pending:
            job = self._pending[0]
            if job.future.done():  # its client went away while it waited
                self._pending.popleft()
                continue
            if jobs and size + job.weight > self._max_batch:
                break
            jobs.append(self._pending.popleft())
            size += job.weight
        return jobs

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            jobs = self._take()
            if not jobs:
                continue
            flat = [item for job in jobs for item in job.items]
            self.running = len(jobs)
            try:
                results = await loop.run_in_executor(self._executor, self._run, flat)
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(unavailable("the server is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self.running = 0
            self.batches_run += 1
            self.requests_run += len(jobs)
            start = 0
            for job in jobs:
                part = results[start:start + len(job.items)]
                start += len(job.items)
                if not job.future.done():
                    job.future.set_result(part)
