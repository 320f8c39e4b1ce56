"""Micro-batching: photos that arrive within a few milliseconds of each other share one model call.

This is the dynamic batching of TF Serving, Triton and BentoML, done small.
Request handlers (on the event loop) `submit` decoded pixels and await the
answer; each inference worker, a thread with its own model session, takes the
first waiting photo, gathers more for up to `batch_wait_ms` or until
`max_batch_size`, runs one model call and hands every photo its row. With
`batch_wait_ms = 0` a worker batches only what is already waiting, which
still merges photos under load without delaying a lone one.

Everything is bounded. `admit` lets at most `queue_size` photos into the
pipeline (decoding or waiting) and refuses the next one at once (503
overloaded); a photo that waits more than `queue_timeout_s` for a worker is
answered 503 too, and the worker skips it. So the queue never grows without
limit and a client never waits without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

import numpy

from catsdogs.service.errors import overloaded
from catsdogs.service.metrics import ServiceMetrics

logger = logging.getLogger("catsdogs.service")

# A model runner: float32 pixels (n, height, width, 3) in, class probabilities (n, classes) out.
Runner = Callable[[numpy.ndarray], numpy.ndarray]
_STOP = object()


@dataclasses.dataclass(eq=False)
class _Item:
    pixels: numpy.ndarray
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float
    started: bool = False
    abandoned: bool = False


class MicroBatcher:
    """Bounded admission, a shared queue and one thread per model worker.

    Args:
        runners: one model runner per worker; each is called from its own thread only.
        max_batch_size: most photos per model call.
        batch_wait_ms: how long a worker waits for more photos after the first.
        queue_size: most photos admitted at once (decoding or waiting for the model).
        queue_timeout_s: longest a photo may wait for a worker.
        metrics: where queue depth, batch sizes and inference seconds are recorded.
    """

    def __init__(
        self,
        runners: Sequence[Runner],
        *,
        max_batch_size: int,
        batch_wait_ms: float,
        queue_size: int,
        queue_timeout_s: float,
        metrics: ServiceMetrics,
    ) -> None:
        self.max_batch_size = int(max_batch_size)
        self.batch_wait_s = float(batch_wait_ms) / 1000.0
        self.queue_size = int(queue_size)
        self.queue_timeout_s = float(queue_timeout_s)
        self.metrics = metrics
        self._runners = list(runners)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting = 0
        self._admitted = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        metrics.watch_queue(lambda: self._waiting)

    def start(self) -> None:
        """Start one thread per worker."""
        for number, runner in enumerate(self._runners):
            thread = threading.Thread(
                target=self._work, args=(runner,), name=f"catsdogs-inference-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Let the workers finish the batch in hand, then stop them; photos still waiting are answered 503."""
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._fail(item, overloaded("The server is shutting down.", reason="shutting_down"))

    @contextlib.contextmanager
    def admit(self):
        """Hold one of the `queue_size` places for a photo while it is decoded and predicted.

        Raises:
            ServiceError: 503 overloaded when every place is taken.
        """
        with self._lock:
            if self._admitted >= self.queue_size:
                raise overloaded(
                    f"The server is busy: {self.queue_size} photos are already being handled.",
                    queue_size=self.queue_size,
                )
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1

    async def submit(self, pixels: numpy.ndarray) -> numpy.ndarray:
        """Queue one photo's pixels (height, width, 3) and return its class probabilities (classes,).

        Raises:
            ServiceError: 503 overloaded when no worker took the photo within `queue_timeout_s`, or when
                no worker is running.
        """
        if not self._threads:
            raise overloaded("The model is not running.", reason="no_worker")
        loop = asyncio.get_running_loop()
        item = _Item(pixels, loop.create_future(), loop, time.monotonic())
        with self._lock:
            self._waiting += 1
        self._queue.put(item)
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), self.queue_timeout_s)
        except TimeoutError:
            with self._lock:
                if not item.started and not item.abandoned:
                    item.abandoned = True
                    self._waiting -= 1
            if item.abandoned:
                raise self._timeout_error() from None
            # A worker has the photo in a model call already; its answer is a moment away.
            return await item.future
        except asyncio.CancelledError:
            with self._lock:
                if not item.started and not item.abandoned:
                    item.abandoned = True
                    self._waiting -= 1
            raise

    def _work(self, runner):
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first)
            if batch:
                self._run(runner, batch)
            if stop:
                return

    def _gather(self, first):
        """Return (the live photos of one batch, whether a stop signal was met)."""
        batch, stop = [first], False
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        live = []
        with self._lock:
            now = time.monotonic()
            for item in batch:
                if item.abandoned:
                    continue
                self._waiting -= 1
                if now - item.enqueued > self.queue_timeout_s:
                    item.abandoned = True
                    self._fail(item, self._timeout_error())
                    continue
                item.started = True
                live.append(item)
        return live, stop

    def _run(self, runner, batch):
        started = time.perf_counter()
        try:
            probabilities = runner(numpy.stack([item.pixels for item in batch]))
        except Exception as error:
            # A failing model call must not kill the worker; its photos get an internal error each.
            logger.exception("The model call failed for a batch of %d photos", len(batch))
            for item in batch:
                self._fail(item, error)
            return
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(batch))
        for item, row in zip(batch, probabilities):
            _call_in_loop(item.loop, _set_result, item.future, row)

    def _fail(self, item, error):
        _call_in_loop(item.loop, _set_exception, item.future, error)

    def _timeout_error(self):
        return overloaded(
            f"The photo waited more than {self.queue_timeout_s:g} s for the model.",
            queue_timeout_s=self.queue_timeout_s,
        )


def _call_in_loop(loop, function, *arguments):
    try:
        loop.call_soon_threadsafe(function, *arguments)
    except RuntimeError:
        # The event loop has closed (the server is gone); nobody waits for this answer any more.
        pass


def _set_result(future, value):
    if not future.done():
        future.set_result(value)


def _set_exception(future, error):
    if not future.done():
        future.set_exception(error)
