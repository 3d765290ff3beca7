"""The outcome reporter: :meth:`OutcomeReporter.report` hands an outcome to a bounded queue
and returns at once; a background task groups outcomes per prompt into JSON arrays no larger
than the server's ``max_payload`` and publishes them to the ``PLEDGER_OUTCOMES`` stream
through JetStream.

Outcomes are telemetry: delivery is at most once, and everything dropped or lost is counted
in :meth:`OutcomeReporter.stats`. Memory is bounded by ``capacity``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Deque, Dict, List, Optional, Tuple

import nats
from nats.aio.client import Client as NATS

from .errors import ReporterClosedError
from .names import outcome_subject
from .outcome import Outcome
from .routing import Resolution

if TYPE_CHECKING:
    from .tracker import Tracker

log = logging.getLogger("pledger_client.reporter")

#: Each message carries a ``Nats-Msg-Id`` header, so that a retried publish whose first try
#: did land is stored once (the stream's duplicate window). Headers count towards the
#: server's ``max_payload``: this is their size.
_MSG_ID_HEADER = "Nats-Msg-Id"
_HEADER_BYTES = len(f"NATS/1.0\r\n{_MSG_ID_HEADER}: {uuid.uuid4().hex}\r\n\r\n".encode())
#: Most publishes awaiting their acknowledgement at once.
_MAX_IN_FLIGHT = 32


@dataclass(frozen=True)
class ReporterStats:
    """The reporter's counters since start. Every outcome ``report`` accepted ends up in
    exactly one of ``published_outcomes``, ``dropped_too_large``, ``dropped_invalid``,
    ``dropped_publish_failed`` or ``queued``."""

    #: Outcomes ``report`` accepted into the queue.
    reported: int
    #: Outcomes the stream acknowledged.
    published_outcomes: int
    #: Messages (batches) the stream acknowledged.
    published_messages: int
    #: Outcomes ``report`` dropped because the queue was full.
    dropped_queue_full: int
    #: Outcomes dropped because alone they exceed the server's ``max_payload``.
    dropped_too_large: int
    #: Outcomes dropped because they break a value rule the workers enforce.
    dropped_invalid: int
    #: Outcomes lost because their message could not be published after every retry.
    dropped_publish_failed: int
    #: Outcomes ``report`` dropped because the reporter was closed.
    dropped_closed: int
    #: Messages whose publish failed after every retry.
    publish_failures: int
    #: Publish attempts that were retried.
    publish_retries: int
    #: Outcomes accepted and not yet published, dropped or failed.
    queued: int

    @property
    def dropped(self) -> int:
        """Every outcome dropped, for whatever reason."""
        return (
            self.dropped_queue_full
            + self.dropped_too_large
            + self.dropped_invalid
            + self.dropped_publish_failed
            + self.dropped_closed
        )


@dataclass
class _Message:
    subject: str
    payload: bytes
    count: int


class OutcomeReporter:
    """Reports outcomes without ever blocking the request path.

    Create it inside a running event loop (its background task runs there)::

        reporter = OutcomeReporter(nc)
        reporter.report(outcome)        # synchronous, never blocks, returns bool
        await reporter.close()          # publishes what is queued

    ``report`` may be called from any thread; the other methods from the event loop.
    """

    def __init__(
        self,
        nc: NATS,
        *,
        capacity: int = 10_000,
        max_batch: int = 500,
        max_delay: float = 1.0,
        max_payload: Optional[int] = None,
        publish_timeout: float = 5.0,
        max_attempts: int = 3,
        retry_backoff: float = 0.2,
    ) -> None:
        """
        :param nc: a connected ``nats-py`` client.
        :param capacity: outcomes queued between ``report`` and the background task; beyond
            it ``report`` drops (and counts).
        :param max_batch: most outcomes in one message.
        :param max_delay: longest an outcome waits (seconds) before it is published.
        :param max_payload: largest message in bytes; default the server's ``max_payload``,
            as the connection learnt it from the server.
        :param publish_timeout: how long one publish and its acknowledgement may take.
        :param max_attempts: publish attempts per message before its outcomes count as lost.
        :param retry_backoff: seconds before the first retry, doubled for each next one.
        """
        self._nc = nc
        self._js = nc.jetstream(timeout=publish_timeout)
        self._capacity = max(1, capacity)
        self._max_batch = max(1, max_batch)
        self._max_delay = max_delay
        self._max_payload = max_payload
        self._publish_timeout = publish_timeout
        self._max_attempts = max(1, max_attempts)
        self._retry_backoff = retry_backoff
        self._queue: Deque[Outcome] = deque()
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._closed = False
        # Outcomes accepted / finished (published, dropped or failed), for flush().
        self._accepted = 0
        self._finished = 0
        self._flushes: List[Tuple[int, "asyncio.Future[None]"]] = []
        self._counts: Dict[str, int] = {
            "reported": 0,
            "published_outcomes": 0,
            "published_messages": 0,
            "dropped_queue_full": 0,
            "dropped_too_large": 0,
            "dropped_invalid": 0,
            "dropped_publish_failed": 0,
            "dropped_closed": 0,
            "publish_failures": 0,
            "publish_retries": 0,
        }
        self._task = self._loop.create_task(self._run(), name="pledger-outcome-reporter")

    # -----------------------------------------------------------------------------------------
    # The request path
    # -----------------------------------------------------------------------------------------

    def report(self, outcome: Outcome) -> bool:
        """Queues an outcome for publishing. Synchronous and never blocks: when the queue is
        full, or the reporter is closed, the outcome is dropped and counted. Returns whether
        it was queued."""
        with self._lock:
            if self._closed:
                self._counts["dropped_closed"] += 1
                return False
            if len(self._queue) >= self._capacity:
                self._counts["dropped_queue_full"] += 1
                return False
            self._queue.append(outcome)
            self._counts["reported"] += 1
            self._accepted += 1
            size = len(self._queue)
        if size == 1 or size >= self._max_batch:
            self._signal(urgent=size >= self._max_batch)
        return True

    def tracker(self, resolution: Resolution, request_id: Optional[str] = None) -> "Tracker":
        """A :class:`~pledger_client.Tracker` for one request served with ``resolution``,
        reporting through this reporter."""
        from .tracker import Tracker

        return Tracker(resolution, self, request_id=request_id)

    def stats(self) -> ReporterStats:
        """The counters so far (safe from any thread)."""
        with self._lock:
            c = dict(self._counts)
            queued = self._accepted - self._finished
        return ReporterStats(queued=queued, **c)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -----------------------------------------------------------------------------------------
    # Flushing and closing (the event loop)
    # -----------------------------------------------------------------------------------------

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Publishes everything reported before this call and waits until each outcome is
        acknowledged or counted as dropped. Raises :class:`ReporterClosedError` once closed
        and drained, ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        with self._lock:
            target = self._accepted
            done = self._finished >= target
        if done:
            return
        if self._task.done():
            raise ReporterClosedError()
        waiter: "asyncio.Future[None]" = self._loop.create_future()
        self._flushes.append((target, waiter))
        self._signal(urgent=True)
        await asyncio.wait_for(asyncio.shield(waiter), timeout)

    async def close(self, timeout: Optional[float] = None) -> None:
        """Stops accepting outcomes (later ``report`` calls count as ``dropped_closed``),
        publishes everything queued, and waits for the background task to end. Calling it
        again is a no-op."""
        with self._lock:
            self._closed = True
        self._signal(urgent=True)
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def __aenter__(self) -> "OutcomeReporter":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -----------------------------------------------------------------------------------------
    # The background task
    # -----------------------------------------------------------------------------------------

    def _signal(self, urgent: bool) -> None:
        if threading.get_ident() == self._loop_thread:
            self._set_events(urgent)
        else:
            try:
                self._loop.call_soon_threadsafe(self._set_events, urgent)
            except RuntimeError:  # the loop is closed: nothing will publish any more
                pass

    def _set_events(self, urgent: bool) -> None:
        self._wake.set()
        if urgent:
            self._urgent.set()

    def _limit(self) -> int:
        max_payload = self._max_payload if self._max_payload is not None else self._nc.max_payload
        return max_payload - _HEADER_BYTES

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                size = len(self._queue)
                closing = self._closed
            if not closing and not self._urgent.is_set() and size < self._max_batch:
                # Let the batch fill up, for at most max_delay.
                try:
                    await asyncio.wait_for(self._urgent.wait(), self._max_delay)
                except asyncio.TimeoutError:
                    pass
            self._urgent.clear()
            with self._lock:
                outcomes = list(self._queue)
                self._queue.clear()
                closing = self._closed
            if outcomes:
                with self._lock:
                    finished_before = self._finished
                try:
                    await self._publish_all(outcomes)
                except Exception:  # never let the task die: count what is unaccounted as lost
                    log.exception("publishing outcomes")
                    with self._lock:
                        lost = len(outcomes) - (self._finished - finished_before)
                    self._count("dropped_publish_failed", lost, finished=lost)
            self._wake_flushes()
            with self._lock:
                if self._queue:
                    self._wake.set()
                elif closing or self._closed:
                    break
        self._wake_flushes()

    def _wake_flushes(self) -> None:
        with self._lock:
            finished = self._finished
        pending = []
        for target, waiter in self._flushes:
            if finished >= target:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                pending.append((target, waiter))
        self._flushes = pending

    def _count(self, name: str, n: int, finished: int = 0) -> None:
        with self._lock:
            self._counts[name] += n
            self._finished += finished

    def _batches(self, outcomes: List[Outcome]) -> List[_Message]:
        """Per-prompt JSON arrays, each within the payload limit and ``max_batch``."""
        limit = self._limit()
        per_prompt: Dict[str, List[bytes]] = {}
        for outcome in outcomes:
            reason = outcome.validate()
            if reason is not None:
                log.debug("dropping an invalid outcome (%s): %s", outcome.request_id, reason)
                self._count("dropped_invalid", 1, finished=1)
                continue
            try:
                item = json.dumps(
                    outcome.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
                ).encode("utf-8")
            except (TypeError, ValueError) as e:
                log.debug("dropping an outcome that does not serialise (%s): %s", outcome.request_id, e)
                self._count("dropped_invalid", 1, finished=1)
                continue
            if len(item) + 2 > limit:
                log.debug("dropping an outcome of %d bytes: over the payload limit", len(item))
                self._count("dropped_too_large", 1, finished=1)
                continue
            per_prompt.setdefault(outcome.prompt, []).append(item)
        messages: List[_Message] = []
        for prompt, items in per_prompt.items():
            subject = outcome_subject(prompt)
            batch: List[bytes] = []
            size = 1  # "["
            for item in items:
                # ",item]" (or "item]" for the first) must still fit.
                extra = len(item) + (1 if batch else 0)
                if batch and (size + extra + 1 > limit or len(batch) >= self._max_batch):
                    messages.append(_Message(subject, b"[" + b",".join(batch) + b"]", len(batch)))
                    batch, size, extra = [], 1, len(item)
                batch.append(item)
                size += extra
            if batch:
                messages.append(_Message(subject, b"[" + b",".join(batch) + b"]", len(batch)))
        return messages

    async def _publish_all(self, outcomes: List[Outcome]) -> None:
        messages = self._batches(outcomes)
        for start in range(0, len(messages), _MAX_IN_FLIGHT):
            group = messages[start : start + _MAX_IN_FLIGHT]
            await asyncio.gather(*(self._publish(m) for m in group))

    async def _publish(self, message: _Message) -> None:
        headers = {_MSG_ID_HEADER: uuid.uuid4().hex}
        delay = self._retry_backoff
        error = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._js.publish(
                    message.subject,
                    message.payload,
                    timeout=self._publish_timeout,
                    headers=headers,
                )
            except (nats.errors.Error, asyncio.TimeoutError, OSError) as e:
                error = f"{type(e).__name__}: {e}"
                if attempt < self._max_attempts:
                    self._count("publish_retries", 1)
                    await asyncio.sleep(delay)
                    delay *= 2
                continue
            with self._lock:
                self._counts["published_messages"] += 1
                self._counts["published_outcomes"] += message.count
                self._finished += message.count
            return
        log.warning(
            "publishing %d outcomes on %s failed after %d attempts: %s",
            message.count,
            message.subject,
            self._max_attempts,
            error,
        )
        with self._lock:
            self._counts["publish_failures"] += 1
            self._counts["dropped_publish_failed"] += message.count
            self._finished += message.count
