"""A small synchronous wrapper, for services that do not run asyncio.

Each wrapper runs the asynchronous SDK on an event loop in a daemon thread of its own.
``resolve`` and ``report`` never cross threads (they read memory / append to a queue), so the
request path costs the same as in asyncio code::

    from pledger_client.sync import SyncReporter, SyncResolver

    resolver = SyncResolver("nats://127.0.0.1:4222", snapshot="/var/lib/svc/routing.json")
    reporter = SyncReporter("nats://127.0.0.1:4222")
    resolution = resolver.resolve("support-triage", unit=user_id, attributes={"geo": "eu"})
    with reporter.tracker(resolution) as tracker:
        ...
    reporter.close()
    resolver.close()
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, Coroutine, Mapping, Optional, TypeVar, Union

import nats
from nats.aio.client import Client as NATS

from .outcome import Outcome
from .reporter import OutcomeReporter, ReporterStats
from .resolver import Resolver, ResolverStats, Servers, Staleness
from .routing import Resolution, RoutingTable
from .tracker import Tracker

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        """Runs ``coro`` on the loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class SyncResolver:
    """A :class:`~pledger_client.Resolver` for synchronous code. The arguments are those of
    :meth:`Resolver.start <pledger_client.Resolver.start>`; the constructor blocks until the
    tables are loaded (or, with an existing snapshot, returns at once)."""

    def __init__(
        self,
        servers: Union[str, list[str]],
        *,
        snapshot: Optional[Union[str, Path]] = None,
        autosave_snapshot: bool = True,
        heartbeat: float = 5.0,
        initial_load_timeout: float = 10.0,
        connect_options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self._thread = _LoopThread("pledger-resolver")
        target: Servers = servers
        try:
            self._resolver: Resolver = self._thread.run(
                Resolver.start(
                    target,
                    snapshot=snapshot,
                    autosave_snapshot=autosave_snapshot,
                    heartbeat=heartbeat,
                    initial_load_timeout=initial_load_timeout,
                    connect_options=connect_options,
                )
            )
        except BaseException:
            self._thread.stop()
            raise

    @property
    def resolver(self) -> Resolver:
        """The asynchronous resolver underneath (its loop runs in another thread)."""
        return self._resolver

    def resolve(
        self,
        prompt: str,
        unit: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
    ) -> Resolution:
        """See :meth:`Resolver.resolve <pledger_client.Resolver.resolve>`."""
        return self._resolver.resolve(prompt, unit, attributes)

    def table(self, prompt: str) -> Optional[RoutingTable]:
        """The routing table of ``prompt``, as last received."""
        return self._resolver.table(prompt)

    def staleness(self) -> Staleness:
        """How current the tables are."""
        return self._resolver.staleness()

    def stats(self) -> ResolverStats:
        """The resolver's counters."""
        return self._resolver.stats()

    @property
    def revision(self) -> int:
        """The last KV revision processed."""
        return self._resolver.revision

    def wait_for(self, condition: Callable[[Resolver], bool], timeout: Optional[float] = None) -> None:
        """Blocks until ``condition(resolver)`` holds; raises ``asyncio.TimeoutError``."""
        self._thread.run(self._resolver.wait_for(condition, timeout))

    def save_snapshot(self, path: Union[str, Path]) -> None:
        """Writes every table held to ``path``."""
        self._resolver.save_snapshot(path)

    def close(self) -> None:
        """Stops the watch and the thread."""
        try:
            self._thread.run(self._resolver.close(), timeout=10)
        finally:
            self._thread.stop()

    def __enter__(self) -> "SyncResolver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncReporter:
    """An :class:`~pledger_client.OutcomeReporter` for synchronous code, on a connection of
    its own. Keyword arguments are the reporter's options."""

    def __init__(
        self,
        servers: Union[str, list[str]],
        *,
        connect_timeout: float = 10.0,
        connect_options: Optional[Mapping[str, Any]] = None,
        **reporter_options: Any,
    ) -> None:
        self._thread = _LoopThread("pledger-reporter")

        async def start() -> "tuple[NATS, OutcomeReporter]":
            options = {"name": "pledger-client-python", "max_reconnect_attempts": -1}
            options.update(connect_options or {})
            nc = await asyncio.wait_for(nats.connect(servers, **options), connect_timeout)
            return nc, OutcomeReporter(nc, **reporter_options)

        try:
            self._nc, self._reporter = self._thread.run(start())
        except BaseException:
            self._thread.stop()
            raise

    def report(self, outcome: Outcome) -> bool:
        """Queues an outcome; never blocks. See :meth:`OutcomeReporter.report`."""
        return self._reporter.report(outcome)

    def tracker(self, resolution: Resolution, request_id: Optional[str] = None) -> Tracker:
        """A tracker for one request served with ``resolution``."""
        return Tracker(resolution, self._reporter, request_id=request_id)

    def stats(self) -> ReporterStats:
        """The reporter's counters."""
        return self._reporter.stats()

    def flush(self, timeout: Optional[float] = None) -> None:
        """Publishes everything reported so far and waits for it."""
        self._thread.run(self._reporter.flush(timeout))

    def close(self, timeout: Optional[float] = None) -> None:
        """Publishes what is queued, then closes the connection and the thread."""

        async def close() -> None:
            try:
                await self._reporter.close(timeout)
            finally:
                await self._nc.close()

        try:
            self._thread.run(close())
        finally:
            self._thread.stop()

    def __enter__(self) -> "SyncReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
