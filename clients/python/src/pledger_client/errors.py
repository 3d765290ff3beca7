"""The SDK's errors. ``report`` never raises (it counts); the rest say what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from .names import ROUTING_BUCKET


class PledgerClientError(Exception):
    """Base class of every error this SDK raises."""


class BucketMissingError(PledgerClientError):
    """The routing bucket does not exist on this server: no pledger command set it up."""

    def __init__(self) -> None:
        super().__init__(
            f"the routing KV bucket `{ROUTING_BUCKET}` does not exist on this NATS server; "
            "run `pledger init` (or any pledger command) against it first"
        )


class UnreachableError(PledgerClientError):
    """The NATS server cannot be reached, or did not answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"cannot reach NATS ({reason}); start one with `pledger up`, or point the service at yours"
        )
        self.reason = reason


class LoadTimeoutError(PledgerClientError):
    """The first load of the routing tables did not finish in time."""

    def __init__(self, seconds: float, last_error: str) -> None:
        super().__init__(
            f"the routing tables did not load within {seconds:g} s (last error: {last_error})"
        )
        self.seconds = seconds
        self.last_error = last_error


class SnapshotError(PledgerClientError):
    """A snapshot file could not be read or written."""

    def __init__(self, path: Union[str, Path], reason: str) -> None:
        super().__init__(f"routing snapshot {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ReporterClosedError(PledgerClientError):
    """The outcome reporter was closed."""

    def __init__(self) -> None:
        super().__init__("the outcome reporter is closed")
