"""Snapshot files: every routing table a resolver holds, as JSON, so that a service restarting
while NATS is away still serves what it served before.

The format is the Rust SDK's (``crates/pledger-client/src/snapshot.rs``), so either SDK reads
the other's files::

    {"format": 2, "saved_at": "2026-11-24T09:30:00.000Z",
     "source": "KV_pledger_routing created 1795510800000000000@single server",
     "tables": [<RoutingTable>, ...]}

``source`` names the routing bucket the tables came from; a resolver that reaches a server
whose bucket is another one drops the snapshot's tables rather than serving them as that
ledger's.
"""

from __future__ import annotations

import calendar
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from .errors import SnapshotError
from .routing import RoutingTable, TableError

#: The snapshot format this SDK writes; newer ones are refused rather than misread.
SNAPSHOT_FORMAT = 2


@dataclass(frozen=True)
class Snapshot:
    """A snapshot file's content."""

    #: When it was saved, unix seconds (wall clock).
    saved_at: float
    #: The routing bucket the tables came from; ``None`` when unknown.
    source: Optional[str]
    tables: Sequence[RoutingTable]


def format_timestamp(unix_seconds: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.fffZ`` (UTC, milliseconds), as pledger writes times."""
    millis = int(unix_seconds * 1000)
    secs, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


def parse_timestamp(text: str) -> float:
    """Parses ``YYYY-MM-DDTHH:MM:SS[.fraction]Z`` to unix seconds; raises ``ValueError``."""
    if not text.endswith("Z") or len(text) < 20 or text[10] != "T":
        raise ValueError(f"`{text}` is not an RFC 3339 UTC time like 2026-11-24T09:30:00.000Z")
    whole, _, fraction = text[:-1].partition(".")
    parsed = time.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    seconds = float(calendar.timegm(parsed))
    if fraction:
        if not fraction.isdigit():
            raise ValueError(f"`{text}` has a malformed fraction of a second")
        seconds += int(fraction) / 10 ** len(fraction)
    return seconds


def read(path: Union[str, Path]) -> Optional[Snapshot]:
    """Reads a snapshot; ``None`` when the file does not exist. Raises :class:`SnapshotError`
    for a file that cannot be read or is not a snapshot this SDK understands."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SnapshotError(path, str(e)) from None
    try:
        value = json.loads(data)
    except ValueError as e:
        raise SnapshotError(path, f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise SnapshotError(path, "not a JSON object")
    fmt = value.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise SnapshotError(path, "missing or malformed `format`")
    if fmt > SNAPSHOT_FORMAT:
        raise SnapshotError(path, f"format {fmt} is newer than this SDK reads ({SNAPSHOT_FORMAT})")
    try:
        saved_at = parse_timestamp(str(value.get("saved_at")))
    except ValueError as e:
        raise SnapshotError(path, f"saved_at: {e}") from None
    source = value.get("source")
    if source is not None and not isinstance(source, str):
        raise SnapshotError(path, "source must be a string")
    raw_tables = value.get("tables")
    if not isinstance(raw_tables, list):
        raise SnapshotError(path, "tables must be an array")
    tables: List[RoutingTable] = []
    for i, raw in enumerate(raw_tables):
        try:
            tables.append(RoutingTable.from_dict(raw))
        except TableError as e:
            raise SnapshotError(path, f"tables[{i}]: {e}") from None
    return Snapshot(saved_at=saved_at, source=source, tables=tables)


def write(path: Union[str, Path], source: Optional[str], tables: Sequence[RoutingTable]) -> None:
    """Writes a snapshot atomically: a temporary file in the same directory, flushed to disk,
    then renamed over ``path``. A reader (or a crash) sees the old file or the new one.
    Raises :class:`SnapshotError`."""
    path = Path(path)
    document: dict[str, Any] = {"format": SNAPSHOT_FORMAT, "saved_at": format_timestamp(time.time())}
    if source is not None:
        document["source"] = source
    document["tables"] = [t.to_dict() for t in sorted(tables, key=lambda t: t.prompt)]
    data = json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")
    tmp: Optional[str] = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent or ".")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise SnapshotError(path, str(e)) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
