"""Fixtures: a real nats-server per test (see helpers.py), a client, the routing bucket."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from helpers import NatsServer, connect
from pledger_client import ROUTING_BUCKET


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    s = NatsServer(tmp_path / "server")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server whose max_payload is 2 KiB."""
    s = NatsServer(tmp_path / "small-server", max_payload=2048)
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def nc(server: NatsServer) -> AsyncIterator[NATS]:
    client = await connect(server.url)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
async def kv(js: JetStreamContext) -> KeyValue:
    """The routing bucket, as ``pledger init`` creates it."""
    return await js.create_key_value(bucket=ROUTING_BUCKET, history=5)


