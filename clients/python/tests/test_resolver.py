"""The resolver against a real nats-server: load, watch, decode errors, fail static,
snapshots, staleness."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from helpers import V1, V2, NatsServer, connect, encode, free_port, table
from pledger_client import (
    Arm,
    BucketMissingError,
    ROUTING_BUCKET,
    Resolver,
    UnreachableError,
)
from pledger_client.snapshot import read as read_snapshot

WAIT = 10.0


async def test_loads_every_table_at_start(nc: NATS, kv: KeyValue) -> None:
    await kv.put("triage", encode(table("triage")))
    await kv.put("summary", encode(table("summary", stable=V2, sequence=4)))
    resolver = await Resolver.start(nc)
    try:
        assert resolver.resolve("triage").version == V1
        summary = resolver.resolve("summary", unit="u1")
        assert summary.version == V2 and summary.ledger_sequence == 4 and summary.arm is None
        assert summary.artifact is not None and summary.artifact.model["family"] == "gpt-4o"
        assert [t.prompt for t in resolver.tables()] == ["summary", "triage"]
        unknown = resolver.resolve("nope")
        assert not unknown.known and unknown.version is None
        staleness = resolver.staleness()
        assert staleness.connected and staleness.synced and staleness.last_error is None
        assert staleness.since_confirmed < WAIT
    finally:
        await resolver.close()


async def test_follows_puts_rollouts_and_deletes(nc: NATS, kv: KeyValue) -> None:
    resolver = await Resolver.start(nc)
    try:
        assert resolver.tables() == []
        revision = await kv.put("triage", encode(table("triage")))
        await resolver.wait_for_revision(revision, WAIT)
        assert resolver.resolve("triage", unit="u1").version == V1

        # A rollout at 100% sends every unit to the candidate.
        updates = resolver.updates
        revision = await kv.put("triage", encode(table("triage", sequence=2, candidate=V2, percent=100)))
        await resolver.wait_for(lambda r: r.revision >= revision, WAIT)
        assert resolver.updates > updates
        r = resolver.resolve("triage", unit="u1")
        assert (r.version, r.arm, r.release) == (V2, Arm.CANDIDATE, "triage-r1")
        assert r.stage_visit == "triage-r1/0/1795000000000"

        # Frozen: everything to the baseline, still under the release.
        revision = await kv.put("triage", encode(table("triage", sequence=3, candidate=V2, percent=100, state="frozen")))
        await resolver.wait_for_revision(revision, WAIT)
        assert resolver.resolve("triage", unit="u1").arm is Arm.BASELINE

        await kv.delete("triage")
        await resolver.wait_for_table("triage", lambda t: t is None, WAIT)
        assert not resolver.resolve("triage").known
    finally:
        await resolver.close()


async def test_a_table_that_does_not_decode_is_counted_and_the_previous_kept(nc: NATS, kv: KeyValue) -> None:
    await kv.put("triage", encode(table("triage", sequence=5)))
    resolver = await Resolver.start(nc)
    try:
        revision = await kv.put("triage", b'{"prompt": "triage", "ledger_sequence": "six"}')
        await resolver.wait_for_revision(revision, WAIT)
        assert resolver.resolve("triage").version == V1
        stats = resolver.stats()
        assert stats.decode_errors == 1
        assert stats.last_decode_error is not None and "ledger_sequence" in stats.last_decode_error

        # Older ledger sequence: ignored. Another prompt's table under this key: ignored.
        revision = await kv.put("triage", encode(table("triage", sequence=4, stable=V2)))
        await resolver.wait_for_revision(revision, WAIT)
        revision = await kv.put("triage", encode(table("other", sequence=9, stable=V2)))
        await resolver.wait_for_revision(revision, WAIT)
        assert resolver.resolve("triage").version == V1
        stats = resolver.stats()
        assert (stats.ignored_older, stats.ignored_wrong_key) == (1, 1)

        # A newer pledger's table with fields this SDK does not know: served.
        newer = table("triage", sequence=6, stable=V2)
        newer["shadow_traffic"] = {"percent": 5}
        revision = await kv.put("triage", encode(newer))
        await resolver.wait_for_revision(revision, WAIT)
        assert resolver.resolve("triage").version == V2
    finally:
        await resolver.close()


async def test_fails_static_while_the_server_is_down_and_catches_up_after(server: NatsServer, kv: KeyValue) -> None:
    await kv.put("triage", encode(table("triage")))
    resolver = await Resolver.start(server.url, heartbeat=0.2)
    try:
        assert resolver.staleness().connected
        server.stop()
        await resolver.wait_for(lambda r: not r.staleness().connected, WAIT)
        # Still serving the last table, and saying how old it is.
        assert resolver.resolve("triage", unit="u1").version == V1
        down = resolver.staleness()
        assert down.synced and down.last_error is not None
        await resolver.wait_for(lambda r: r.staleness().since_confirmed > down.since_confirmed + 0.3, WAIT)
        assert resolver.resolve("triage", unit="u1").version == V1

        server.start()
        await resolver.wait_for(lambda r: r.staleness().connected, WAIT)
        writer = await connect(server.url)
        try:
            store = await writer.jetstream().key_value(ROUTING_BUCKET)
            revision = await store.put("triage", encode(table("triage", sequence=2, stable=V2)))
        finally:
            await writer.close()
        await resolver.wait_for_revision(revision, WAIT)
        assert resolver.resolve("triage").version == V2
        assert resolver.staleness().since_confirmed < 1.0
    finally:
        await resolver.close()


async def test_starts_from_a_snapshot_while_the_server_is_down(server: NatsServer, kv: KeyValue, tmp_path: Path) -> None:
    snapshot = tmp_path / "routing.json"
    await kv.put("triage", encode(table("triage", candidate=V2, percent=100)))
    first = await Resolver.start(server.url, snapshot=snapshot)
    await first.close()
    # A first live start leaves a snapshot behind, in the Rust SDK's format.
    saved = json.loads(snapshot.read_text())
    assert saved["format"] == 2 and saved["source"].startswith("KV_pledger_routing created ")
    assert [t["prompt"] for t in saved["tables"]] == ["triage"]
    assert read_snapshot(snapshot) is not None

    server.stop()
    started = time.monotonic()
    resolver = await Resolver.start(server.url, snapshot=snapshot, heartbeat=0.2)
    try:
        assert time.monotonic() - started < 2.0, "a snapshot start does not wait for the server"
        r = resolver.resolve("triage", unit="u1")
        assert (r.version, r.arm) == (V2, Arm.CANDIDATE)
        staleness = resolver.staleness()
        assert not staleness.connected and not staleness.synced
        assert staleness.since_confirmed >= 0

        server.start()
        await resolver.wait_synced(WAIT)
        assert resolver.staleness().connected
        assert resolver.resolve("triage", unit="u1").version == V2
    finally:
        await resolver.close()


async def test_a_snapshot_of_another_bucket_is_dropped_once_the_server_answers(
    nc: NATS, kv: KeyValue, tmp_path: Path
) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({
        "format": 2,
        "saved_at": "2026-11-24T09:30:00.000Z",
        "source": "KV_pledger_routing created 1@another ledger",
        "tables": [table("elsewhere")],
    }))
    await kv.put("triage", encode(table("triage")))
    resolver = await Resolver.start(nc, snapshot=path)
    try:
        await resolver.wait_synced(WAIT)
        assert [t.prompt for t in resolver.tables()] == ["triage"]
        # The snapshot was rewritten from this bucket.
        saved = read_snapshot(path)
        assert saved is not None and [t.prompt for t in saved.tables] == ["triage"]
    finally:
        await resolver.close()


async def test_save_snapshot_and_start_from_it(nc: NATS, kv: KeyValue, tmp_path: Path) -> None:
    await kv.put("triage", encode(table("triage", sequence=3)))
    resolver = await Resolver.start(nc)
    path = tmp_path / "saved.json"
    resolver.save_snapshot(path)
    await resolver.close()
    again = await Resolver.start(nc, snapshot=path)
    try:
        assert again.resolve("triage").version == V1
        await again.wait_synced(WAIT)
        assert again.resolve("triage").ledger_sequence == 3
    finally:
        await again.close()


async def test_heartbeats_keep_the_tables_confirmed(nc: NATS, kv: KeyValue) -> None:
    await kv.put("triage", encode(table("triage")))
    resolver = await Resolver.start(nc, heartbeat=0.1)
    try:
        # Nothing changes in the bucket; each heartbeat still confirms (and wakes waiters).
        started = time.monotonic()
        updates = resolver.updates
        await resolver.wait_for(lambda r: r.updates >= updates + 5, WAIT)
        assert time.monotonic() - started >= 0.3
        staleness = resolver.staleness()
        assert staleness.connected and staleness.since_confirmed < 0.3
    finally:
        await resolver.close()


async def test_a_missing_bucket_is_named(nc: NATS) -> None:
    with pytest.raises(BucketMissingError, match="pledger init"):
        await Resolver.start(nc, initial_load_timeout=5)


async def test_an_unreachable_server_is_named() -> None:
    with pytest.raises(UnreachableError):
        await Resolver.start(f"nats://127.0.0.1:{free_port()}", initial_load_timeout=0.5)


async def test_wait_for_times_out(nc: NATS, kv: KeyValue) -> None:
    resolver = await Resolver.start(nc)
    try:
        with pytest.raises(asyncio.TimeoutError):
            await resolver.wait_for(lambda r: False, timeout=0.1)
    finally:
        await resolver.close()
