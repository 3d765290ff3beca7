"""Test helpers (imported by the tests and by conftest.py): a real nats-server per test, on a free port, with its store in a temporary
directory (nothing touches $HOME).

The server binary comes from ``PLEDGER_NATS_SERVER`` (the repository's setup installs one
under ``.tools/bin/nats-server``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from pledger_client import OUTCOMES_STREAM, ROUTING_BUCKET

REPO_ROOT = Path(__file__).resolve().parents[3]
VECTORS = REPO_ROOT / "clients" / "vectors" / "resolve.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    path = os.environ.get("PLEDGER_NATS_SERVER")
    if not path:
        pytest.fail("PLEDGER_NATS_SERVER must name a nats-server (>= 2.11) binary")
    if not os.access(path, os.X_OK):
        pytest.fail(f"PLEDGER_NATS_SERVER={path} is not an executable file")
    return path


def wait_until(what: str, condition: Any, timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Polls ``condition`` until it returns something truthy (only where there is no event
    to await: another process's state)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


class NatsServer:
    """A nats-server with JetStream on a free port; ``stop``/``start`` keep port and store."""

    def __init__(self, root: Path, max_payload: Optional[int] = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = root / "jetstream"
        self.config = root / "nats.conf"
        self.log = root / "nats.log"
        lines = [
            f"listen: 127.0.0.1:{self.port}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(self.store))}",
            "}",
        ]
        if max_payload is not None:
            lines.append(f"max_payload: {max_payload}")
        self.config.write_text("\n".join(lines) + "\n")
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log_text_before = self.log.read_text() if self.log.exists() else ""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"nats-server exited:\n{self.log.read_text()}")
            text = self.log.read_text()[len(log_text_before) :]
            return "Server is ready" in text

        wait_until("nats-server start", ready)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


async def connect(url: str) -> NATS:
    return await nats.connect(url, name="pledger-client-tests", max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def create_outcomes_stream(js: JetStreamContext) -> None:
    await js.add_stream(name=OUTCOMES_STREAM, subjects=["pledger.outcomes.>"])


async def stream_messages(js: JetStreamContext, stream: str) -> List[Any]:
    """Every message of a stream, in order."""
    info = await js.stream_info(stream)
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        messages.append(await js.get_msg(stream, seq))
    return messages


# ---------------------------------------------------------------------------------------------
# Routing tables
# ---------------------------------------------------------------------------------------------

V1 = "sha256:" + "1" * 64
V2 = "sha256:" + "2" * 64


def artifact(text: str) -> Dict[str, Any]:
    return {
        "instructions": text,
        "known_limitations": [],
        "model": {"family": "gpt-4o", "temperature": 0.2},
        "tools": {"schema_version": "none"},
    }


def table(
    prompt: str = "triage",
    *,
    sequence: int = 1,
    stable: Optional[str] = V1,
    candidate: Optional[str] = None,
    percent: float = 50.0,
    state: str = "rolling_out",
    match: Optional[Dict[str, Any]] = None,
    stage_visit: Optional[str] = "triage-r1/0/1795000000000",
) -> Dict[str, Any]:
    """A routing table's JSON object: stable only, or a one-stage rollout of ``candidate``."""
    value: Dict[str, Any] = {"prompt": prompt, "stable": stable, "ledger_sequence": sequence}
    artifacts = {}
    if stable is not None:
        artifacts[stable] = artifact(f"stable {stable[7:12]}")
    if candidate is not None:
        stage: Dict[str, Any] = {"name": "half", "percent": percent}
        if match:
            stage["match"] = match
        rollout: Dict[str, Any] = {
            "release": f"{prompt}-r1",
            "candidate": candidate,
            "state": state,
            "current_stage": "half",
            "bucketing_salt": "salt-1",
            "stages": [stage],
        }
        if stage_visit is not None:
            rollout["stage_visit"] = stage_visit
        value["rollout"] = rollout
        artifacts[candidate] = artifact(f"candidate {candidate[7:12]}")
    value["artifacts"] = artifacts
    return value


def encode(value: Dict[str, Any]) -> bytes:
    return json.dumps(value).encode()
