"""The resolver: every routing table of the ``pledger_routing`` KV bucket in memory, kept
current by a KV watch, answering :meth:`Resolver.resolve` locally (no network per call).

Failure behaviour:

- **Fail static.** When NATS is unreachable the resolver keeps serving the last tables it
  had; the client reconnects by itself and the watch is re-created.
  :meth:`Resolver.staleness` says whether the watch is live and how long ago the tables were
  last confirmed to match the bucket.
- **Snapshots.** With ``snapshot=PATH`` the resolver rewrites a JSON snapshot of its tables
  whenever they change, and the next :meth:`Resolver.start` serves that snapshot at once,
  even while the server is down (give it the server URL so that it owns the connection and
  keeps retrying).
- **Ordering.** A table is never replaced by one derived from an older ledger sequence.
  Deleting a prompt's key removes the prompt. A value that does not decode is logged and
  counted (:meth:`Resolver.stats`), and the previous table for that prompt is kept.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import nats
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from . import snapshot as snapshots
from .errors import (
    BucketMissingError,
    LoadTimeoutError,
    PledgerClientError,
    UnreachableError,
)
from .names import ROUTING_BUCKET, ROUTING_STREAM
from .routing import Resolution, RoutingTable, TableError, resolve, unknown

log = logging.getLogger("pledger_client.resolver")

#: What :meth:`Resolver.start` connects to: a connected ``nats-py`` client (the caller owns
#: it), or server URL(s), in which case the resolver connects, keeps retrying in the
#: background while the server is down, and closes the connection on :meth:`Resolver.close`.
Servers = Union[NATS, str, Sequence[str]]

_KV_DEL = "DEL"
_KV_PURGE = "PURGE"
_MAX_BACKOFF = 5.0


@dataclass(frozen=True)
class Staleness:
    """How current the resolver's tables are. Tables are served whatever this says (fail
    static); use it for health checks and alerts."""

    #: The watch is live: the client is connected and the last check against the server
    #: succeeded.
    connected: bool
    #: The tables were loaded from the server at least once since start (``False`` while
    #: only a snapshot is served).
    synced: bool
    #: Seconds since the tables were last confirmed to match the bucket (by an update or a
    #: heartbeat). While only a snapshot is served: seconds since the snapshot was saved.
    since_confirmed: float
    #: Why the watch is not live, when it is not.
    last_error: Optional[str]


@dataclass(frozen=True)
class ResolverStats:
    """The resolver's counters since start."""

    #: Changes observed (tables, revision, connectivity); what waiters wake on.
    updates: int
    #: The last KV revision of the bucket the watch processed (0 before any).
    revision: int
    #: Prompts held.
    prompts: int
    #: KV values that did not decode as routing tables (the previous table was kept).
    decode_errors: int
    #: Tables ignored because they came from an older ledger sequence than the one held.
    ignored_older: int
    #: Tables ignored because they were stored under another prompt's key.
    ignored_wrong_key: int
    #: The last decode error, with its key.
    last_decode_error: Optional[str]


class _Resubscribe(Exception):
    """Ends a watch session so that the next one starts afresh (not an error)."""


def _created_nanos(created: str) -> int:
    """Unix nanoseconds of an RFC 3339 UTC time with up to nine fractional digits."""
    whole, _, fraction = created.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    digits = "".join(c for c in fraction if c.isdigit())[:9].ljust(9, "0")
    return seconds * 1_000_000_000 + int(digits)


def bucket_source(info: Mapping[str, Any]) -> str:
    """Names a routing bucket from its stream info: stream name, creation time and cluster
    (the same text as the Rust SDK's, so snapshots are interchangeable). A bucket deleted and
    created again, or another server's, has another name."""
    config = info.get("config") or {}
    cluster = (info.get("cluster") or {}).get("name") or "single server"
    created = str(info.get("created", ""))
    try:
        nanos: Union[int, str] = _created_nanos(created)
    except ValueError:
        nanos = created
    return f"{config.get('name', ROUTING_STREAM)} created {nanos}@{cluster}"


class Resolver:
    """Resolves prompts to versions from memory.

    Start one with :meth:`Resolver.start` (live, from NATS) or :meth:`Resolver.from_tables`
    (fixed tables, for a service's unit tests). All methods must be called from the event
    loop the resolver was started in, except :meth:`resolve`, :meth:`table`, :meth:`tables`,
    :meth:`staleness` and :meth:`stats`, which only read and are safe from any thread.
    """

    def __init__(
        self,
        *,
        snapshot: Optional[Union[str, Path]] = None,
        autosave_snapshot: bool = True,
        heartbeat: float = 5.0,
        initial_load_timeout: float = 10.0,
    ) -> None:
        """Use :meth:`start` or :meth:`from_tables`; this only sets the options."""
        self._snapshot_path = Path(snapshot) if snapshot is not None else None
        self._autosave_enabled = autosave_snapshot
        self._heartbeat = heartbeat
        self._initial_load_timeout = initial_load_timeout
        # Replaced as a whole on every change (copy on write): readers in any thread see one
        # consistent dict without a lock.
        self._tables: Dict[str, RoutingTable] = {}
        self._key_revisions: Dict[str, int] = {}
        self._source: Optional[str] = None
        self._nc: Optional[NATS] = None
        self._owns_connection = False
        self._servers: List[str] = []
        self._connect_options: Dict[str, Any] = {}
        self._ever_connected = False
        self._task: Optional["asyncio.Task[None]"] = None
        self._first: Optional["asyncio.Future[None]"] = None
        self._waiters: List["asyncio.Future[None]"] = []
        self._closed = False
        self._dirty = False
        # Status.
        self._live = False
        self._synced = False
        self._confirmed_monotonic: Optional[float] = time.monotonic()
        self._confirmed_wall: Optional[float] = None
        self._last_error: Optional[str] = None
        self._revision = 0
        self._updates = 0
        self._decode_errors = 0
        self._ignored_older = 0
        self._ignored_wrong_key = 0
        self._last_decode_error: Optional[str] = None

    # -----------------------------------------------------------------------------------------
    # Construction
    # -----------------------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        servers: Servers,
        *,
        snapshot: Optional[Union[str, Path]] = None,
        autosave_snapshot: bool = True,
        heartbeat: float = 5.0,
        initial_load_timeout: float = 10.0,
        connect_options: Optional[Mapping[str, Any]] = None,
    ) -> "Resolver":
        """Starts a resolver: loads every table of the ``pledger_routing`` bucket, then
        follows the bucket's changes in a background task.

        - Without a snapshot (or when its file does not exist yet), returns once the tables
          are loaded, or raises: :class:`BucketMissingError` when no pledger command ever set
          the server up, :class:`UnreachableError` when the server cannot be reached and
          :class:`LoadTimeoutError` when it does not answer within ``initial_load_timeout``
          seconds.
        - With a readable snapshot, returns at once serving the snapshot, whatever the
          server's state; the live load follows in the background
          (:meth:`wait_synced` waits for it). An unreadable snapshot is logged and ignored.

        ``heartbeat`` is how often (seconds) the watch confirms against the server that no
        change is missing, and notices a lost connection. ``connect_options`` are extra
        keyword arguments for ``nats.connect`` when ``servers`` are URLs.
        """
        self = cls(
            snapshot=snapshot,
            autosave_snapshot=autosave_snapshot,
            heartbeat=heartbeat,
            initial_load_timeout=initial_load_timeout,
        )
        if isinstance(servers, NATS):
            self._nc = servers
        else:
            self._owns_connection = True
            self._servers = [servers] if isinstance(servers, str) else list(servers)
            self._connect_options = dict(connect_options or {})
        from_snapshot = self._load_snapshot()
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._task = loop.create_task(self._run(), name="pledger-resolver")
        if from_snapshot:
            return self
        try:
            await asyncio.wait_for(asyncio.shield(self._first), initial_load_timeout)
        except asyncio.TimeoutError:
            error: PledgerClientError
            if self._owns_connection and not self._ever_connected:
                error = UnreachableError(self._last_error or "no answer")
            else:
                error = LoadTimeoutError(initial_load_timeout, self._last_error or "none")
            await self.close()
            raise error from None
        except BaseException:
            await self.close()
            raise
        return self

    @classmethod
    def from_tables(cls, tables: Iterable[Union[RoutingTable, Mapping[str, Any]]]) -> "Resolver":
        """A resolver over fixed tables (objects or their JSON dicts), with no server: for
        unit tests of a service's own code."""
        self = cls()
        for table in tables:
            parsed = table if isinstance(table, RoutingTable) else RoutingTable.from_dict(dict(table))
            self._tables = {**self._tables, parsed.prompt: parsed}
        self._last_error = "fixed tables: no server"
        return self

    def _load_snapshot(self) -> bool:
        if self._snapshot_path is None:
            return False
        try:
            snap = snapshots.read(self._snapshot_path)
        except PledgerClientError as e:
            log.warning("ignoring the routing snapshot: %s", e)
            return False
        if snap is None:
            return False
        # A snapshot without its source is from an unknown bucket: served while no server
        # answers, dropped when one does.
        self._source = snap.source or "an unknown routing bucket (a snapshot without its source)"
        self._tables = {t.prompt: t for t in snap.tables}
        self._confirmed_monotonic = None
        self._confirmed_wall = snap.saved_at
        log.info(
            "serving the routing snapshot (%d tables, saved at %s) until the live tables load",
            len(snap.tables),
            snapshots.format_timestamp(snap.saved_at),
        )
        return True

    # -----------------------------------------------------------------------------------------
    # Reading (any thread)
    # -----------------------------------------------------------------------------------------

    def resolve(
        self,
        prompt: str,
        unit: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
    ) -> Resolution:
        """Which version ``prompt`` serves for this request, answered from memory with the
        same sticky bucketing as ``pledger resolve``. Never touches the network. An unknown
        prompt gives a resolution with ``known=False`` and ``version=None``.

        ``unit`` is the sticky unit key (a user, account or conversation id): the same key
        gets the same arm for the whole rollout. ``attributes`` are matched against the
        rollout stages' ``match``.
        """
        table = self._tables.get(prompt)
        if table is None:
            return unknown(prompt, unit, attributes)
        return resolve(table, unit, attributes)

    def table(self, prompt: str) -> Optional[RoutingTable]:
        """The routing table of ``prompt``, as last received."""
        return self._tables.get(prompt)

    def tables(self) -> List[RoutingTable]:
        """Every table held, sorted by prompt."""
        return sorted(self._tables.values(), key=lambda t: t.prompt)

    @property
    def revision(self) -> int:
        """The last KV revision of the bucket the watch has processed (0 before any)."""
        return self._revision

    @property
    def updates(self) -> int:
        """A counter bumped on every observable change (tables, revision, connectivity)."""
        return self._updates

    def staleness(self) -> Staleness:
        """How current the tables are, and whether the watch is live."""
        if self._confirmed_monotonic is not None:
            since = time.monotonic() - self._confirmed_monotonic
        else:
            since = max(0.0, time.time() - (self._confirmed_wall or time.time()))
        client_up = self._nc is not None and self._nc.is_connected
        connected = self._live and client_up
        last_error = None
        if not connected:
            if self._last_error is not None:
                last_error = self._last_error
            elif self._nc is None and not self._owns_connection:
                last_error = "fixed tables: no server"
            else:
                last_error = "not connected to NATS"
        return Staleness(
            connected=connected,
            synced=self._synced,
            since_confirmed=since,
            last_error=last_error,
        )

    def stats(self) -> ResolverStats:
        """The resolver's counters."""
        return ResolverStats(
            updates=self._updates,
            revision=self._revision,
            prompts=len(self._tables),
            decode_errors=self._decode_errors,
            ignored_older=self._ignored_older,
            ignored_wrong_key=self._ignored_wrong_key,
            last_decode_error=self._last_decode_error,
        )

    def save_snapshot(self, path: Union[str, Path]) -> None:
        """Writes every table held to ``path`` as JSON, atomically, for a later
        ``start(..., snapshot=path)``. Raises :class:`~pledger_client.SnapshotError`."""
        snapshots.write(path, self._source, list(self._tables.values()))

    # -----------------------------------------------------------------------------------------
    # Waiting (the resolver's event loop)
    # -----------------------------------------------------------------------------------------

    async def wait_for(
        self, condition: Callable[["Resolver"], bool], timeout: Optional[float] = None
    ) -> None:
        """Waits until ``condition(resolver)`` holds, re-checking after every change. Raises
        ``asyncio.TimeoutError`` after ``timeout`` seconds."""

        async def wait() -> None:
            loop = asyncio.get_running_loop()
            while not condition(self):
                waiter: "asyncio.Future[None]" = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

        await asyncio.wait_for(wait(), timeout)

    async def wait_for_table(
        self,
        prompt: str,
        predicate: Callable[[Optional[RoutingTable]], bool],
        timeout: Optional[float] = None,
    ) -> None:
        """Waits until ``prompt``'s table (``None``: no table) satisfies ``predicate``."""
        await self.wait_for(lambda r: predicate(r.table(prompt)), timeout)

    async def wait_for_revision(self, revision: int, timeout: Optional[float] = None) -> None:
        """Waits until the watch has processed the bucket's ``revision`` (e.g. the revision a
        KV put returned), whether or not it changed a table."""
        await self.wait_for(lambda r: r.revision >= revision, timeout)

    async def wait_synced(self, timeout: Optional[float] = None) -> None:
        """Waits until the tables have been loaded from the server."""
        await self.wait_for(lambda r: r._synced, timeout)

    async def close(self) -> None:
        """Stops the watch (and closes the connection if the resolver opened it). The tables
        held are still served."""
        self._closed = True
        task, self._task = self._task, None
        # Cancelled until it ends: before Python 3.12, `asyncio.wait_for` can swallow a
        # cancellation that arrives as its inner future completes.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if self._first is not None and not self._first.done():
            self._first.cancel()
        if self._owns_connection and self._nc is not None:
            nc, self._nc = self._nc, None
            try:
                await nc.close()
            except Exception:  # closing is best effort
                pass
        self._live = False
        self._bump()

    async def __aenter__(self) -> "Resolver":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Resolver prompts={len(self._tables)} revision={self._revision} {self.staleness()}>"

    # -----------------------------------------------------------------------------------------
    # The background task
    # -----------------------------------------------------------------------------------------

    def _bump(self) -> None:
        self._updates += 1
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _fail(self, error: str) -> None:
        self._live = False
        self._last_error = error
        self._bump()

    def _confirm(self) -> None:
        self._live = True
        self._confirmed_monotonic = time.monotonic()
        self._confirmed_wall = None
        self._last_error = None
        self._bump()

    async def _connect(self) -> NATS:
        if self._nc is not None:
            return self._nc

        async def error_cb(e: Exception) -> None:
            self._last_error = f"NATS: {e or type(e).__name__}"
            log.debug("nats: %r", e)

        async def disconnected_cb() -> None:
            self._fail("disconnected from NATS")

        async def reconnected_cb() -> None:
            log.info("reconnected to NATS")
            self._bump()

        options: Dict[str, Any] = {
            "name": "pledger-client-python",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 2,
            "error_cb": error_cb,
            "disconnected_cb": disconnected_cb,
            "reconnected_cb": reconnected_cb,
        }
        options.update(self._connect_options)
        # With max_reconnect_attempts=-1, nats.connect retries until a server answers.
        self._nc = await nats.connect(self._servers, **options)
        return self._nc

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closed:
            try:
                nc = await self._connect()
                if nc.is_closed:
                    # The caller's client was closed: nothing will reconnect it.
                    self._fail("the NATS client was closed")
                    return
                self._ever_connected = True
                await self._session(nc)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except _Resubscribe as e:
                log.debug("routing watch: starting afresh (%s)", e)
                continue
            except PledgerClientError as e:
                self._report_error(e)
            except Exception as e:  # every failure is retried; the tables keep serving
                self._report_error(UnreachableError(f"{type(e).__name__}: {e}"))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _report_error(self, error: PledgerClientError) -> None:
        log.warning("routing watch: %s", error)
        self._fail(str(error))
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)
            # Retrieved by start(); mark it so that asyncio does not warn when it is not.
            self._first.exception()

    async def _stream_info(self, nc: NATS) -> Dict[str, Any]:
        timeout = min(max(self._heartbeat, 0.1), 2.0)
        try:
            msg = await nc.request(f"$JS.API.STREAM.INFO.{ROUTING_STREAM}", b"", timeout=timeout)
        except nats.errors.NoRespondersError:
            raise PledgerClientError("JetStream is not enabled on this NATS server") from None
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            raise UnreachableError("the server did not answer a stream info request") from None
        info: Dict[str, Any] = json.loads(msg.data)
        error = info.get("error")
        if error:
            if error.get("err_code") == 10059 or error.get("code") == 404:
                raise BucketMissingError()
            raise PledgerClientError(f"NATS: {error.get('description', error)}")
        return info

    async def _session(self, nc: NATS) -> None:
        """One load-then-watch of the whole bucket; returns (or raises) when it must be
        re-created."""
        reconnects = nc.stats.get("reconnects", 0)
        info = await self._stream_info(nc)
        live_source = bucket_source(info)
        held, self._source = self._source, live_source
        if held is not None and held != live_source:
            dropped = len(self._tables)
            self._tables = {}
            self._key_revisions.clear()
            log.warning(
                "the routing tables held came from %s, not from this server's bucket (%s): "
                "dropped %d; serving this bucket's",
                held,
                live_source,
                dropped,
            )
            self._dirty = True
            self._bump()
        state = info.get("state") or {}
        target = int(state.get("last_seq", 0)) if int(state.get("messages", 0)) else 0
        kv: KeyValue = await nc.jetstream().key_value(ROUTING_BUCKET)
        watcher = await kv.watchall()
        loading: Optional[Set[str]] = set()
        session_max = 0
        lagging_beats = 0
        try:
            if target == 0:
                await self._finish_load(set())
                loading = None
            next_beat = time.monotonic() + self._heartbeat
            while not self._closed:
                wait = max(0.0, next_beat - time.monotonic())
                try:
                    entry = await watcher.updates(timeout=wait)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    entry = _BEAT
                if entry is _BEAT:
                    next_beat = time.monotonic() + self._heartbeat
                    if not nc.is_connected:
                        self._fail("not connected to NATS")
                        continue
                    if nc.stats.get("reconnects", 0) != reconnects:
                        raise _Resubscribe("reconnected")
                    try:
                        info = await self._stream_info(nc)
                    except PledgerClientError as e:
                        self._fail(f"heartbeat: {e}")
                        continue
                    if bucket_source(info) != live_source:
                        raise _Resubscribe("the bucket was created again")
                    state = info.get("state") or {}
                    if int(state.get("messages", 0)) == 0 or int(state.get("last_seq", 0)) <= session_max:
                        lagging_beats = 0
                        if loading is not None:
                            await self._finish_load(loading)
                            loading = None
                        else:
                            self._confirm()
                            await self._autosave()
                    else:
                        lagging_beats += 1
                        if lagging_beats >= 2:
                            raise _Resubscribe("the watch fell behind the bucket")
                    continue
                if entry is None:
                    # nats-py's "initial values delivered" marker. It can come before entries
                    # the server had already pushed, so the load ends on the stream's last
                    # sequence (or an entry with nothing pending) instead.
                    continue
                session_max = max(session_max, entry.revision or 0)
                if loading is not None:
                    loading.add(entry.key)
                self._apply(entry)
                if (entry.revision or 0) > self._revision:
                    self._revision = entry.revision or 0
                self._bump()
                if loading is not None:
                    if entry.delta == 0 or session_max >= target:
                        await self._finish_load(loading)
                        loading = None
                elif entry.delta == 0:
                    self._confirm()
                    await self._autosave()
        finally:
            try:
                await watcher.stop()  # type: ignore[no-untyped-call]
            except Exception:
                pass

    def _apply(self, entry: KeyValue.Entry) -> None:
        key = entry.key
        revision = entry.revision or 0
        if self._key_revisions.get(key, 0) >= revision:
            return
        self._key_revisions[key] = revision
        if entry.operation in (_KV_DEL, _KV_PURGE):
            if key in self._tables:
                self._tables = {k: v for k, v in self._tables.items() if k != key}
                self._dirty = True
            return
        try:
            table = RoutingTable.from_json(entry.value or b"")
        except TableError as e:
            self._decode_errors += 1
            self._last_decode_error = f"{key}: {e}"
            log.warning("ignoring a routing table that does not decode (key %s): %s", key, e)
            return
        if table.prompt != key:
            self._ignored_wrong_key += 1
            log.warning(
                "ignoring a routing table stored under another prompt's key (key %s, prompt %s)",
                key,
                table.prompt,
            )
            return
        current = self._tables.get(key)
        if current is not None:
            if current.ledger_sequence > table.ledger_sequence:
                self._ignored_older += 1
                log.debug("ignoring a routing table from an older ledger sequence (key %s)", key)
                return
            if current.raw == table.raw:
                return
        self._tables = {**self._tables, key: table}
        self._dirty = True

    async def _finish_load(self, seen: Set[str]) -> None:
        if any(k not in seen for k in self._tables):
            self._tables = {k: v for k, v in self._tables.items() if k in seen}
        # Saved before anyone hears of the load (start() returning, wait_synced), so that a
        # first start leaves a snapshot behind.
        self._dirty = True
        await self._autosave()
        self._synced = True
        self._confirm()
        if self._first is not None and not self._first.done():
            self._first.set_result(None)

    async def _autosave(self) -> None:
        if not self._dirty or not self._autosave_enabled or self._snapshot_path is None:
            return
        self._dirty = False
        tables = list(self._tables.values())
        try:
            await asyncio.to_thread(snapshots.write, self._snapshot_path, self._source, tables)
        except PledgerClientError as e:
            log.warning("saving the routing snapshot: %s", e)
            return
        self._bump()


class _Beat:
    """The heartbeat's turn in the watch loop."""


_BEAT: Any = _Beat()
