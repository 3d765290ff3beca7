"""The synchronous wrapper, from plain (non-async) code."""

from __future__ import annotations

import asyncio
import json

import nats

from helpers import V1, V2, NatsServer, connect, create_outcomes_stream, encode, stream_messages, table
from pledger_client import OUTCOMES_STREAM, ROUTING_BUCKET
from pledger_client.sync import SyncReporter, SyncResolver


async def _setup(url: str) -> None:
    nc = await connect(url)
    js = nc.jetstream()
    kv = await js.create_key_value(bucket=ROUTING_BUCKET)
    await kv.put("triage", encode(table("triage", candidate=V2, percent=100)))
    await create_outcomes_stream(js)
    await nc.close()


async def _put(url: str) -> int:
    nc = await nats.connect(url)
    kv = await nc.jetstream().key_value(ROUTING_BUCKET)
    revision = await kv.put("triage", encode(table("triage", sequence=2)))
    await nc.close()
    return revision


async def _outcomes(url: str) -> list:  # type: ignore[type-arg]
    nc = await connect(url)
    messages = await stream_messages(nc.jetstream(), OUTCOMES_STREAM)
    await nc.close()
    return [o for m in messages for o in json.loads(m.data)]


def test_resolve_track_and_report_without_asyncio(server: NatsServer) -> None:
    asyncio.run(_setup(server.url))
    with SyncResolver(server.url, heartbeat=0.5) as resolver, SyncReporter(server.url) as reporter:
        resolution = resolver.resolve("triage", unit="u1")
        assert resolution.version == V2
        with reporter.tracker(resolution) as tracker:
            tracker.track_tokens(5, 6)
        reporter.flush(timeout=10)
        assert reporter.stats().published_outcomes == 1

        revision = asyncio.run(_put(server.url))
        resolver.wait_for(lambda r: r.revision >= revision, timeout=10)
        assert resolver.resolve("triage", unit="u1").version == V1
        assert resolver.staleness().connected
    [o] = asyncio.run(_outcomes(server.url))
    assert (o["version"], o["tokens_in"], o["tokens_out"]) == (V2, 5, 6)
