"""Python SDK of Prompt Ledger (``pledger``): which prompt version to serve for a request,
and how it went.

A service does two things with pledger:

1. **Resolve** each request to a prompt version with a :class:`Resolver`, which holds every
   routing table of the ``pledger_routing`` KV bucket in memory and follows its changes (a
   rollout advancing, a freeze, a rollback) through a KV watch. ``resolve`` answers locally,
   with the same sticky bucketing as the Rust core.
2. **Report** each request's outcome with an :class:`OutcomeReporter`, usually through a
   :class:`Tracker`. ``report`` is synchronous and never blocks; outcomes are batched per
   prompt and published to the ``PLEDGER_OUTCOMES`` stream, where the canary monitor
   compares the candidate with its baseline.

See ``README.md`` for a walk-through, and :mod:`pledger_client.sync` for code without
asyncio.
"""

from .errors import (
    BucketMissingError,
    LoadTimeoutError,
    PledgerClientError,
    ReporterClosedError,
    SnapshotError,
    UnreachableError,
)
from .names import OUTCOMES_STREAM, ROUTING_BUCKET, ROUTING_STREAM, outcome_subject
from .outcome import MAX_ATTRS, MAX_FEEDBACK_EXAMPLE_BYTES, Feedback, FeedbackTag, Outcome
from .reporter import OutcomeReporter, ReporterStats
from .resolver import Resolver, ResolverStats, Staleness
from .routing import (
    BUCKETS,
    Arm,
    Artifact,
    Resolution,
    RoutedRollout,
    RoutedStage,
    RoutingTable,
    TableError,
    bucket,
    resolve,
    stage_matches,
)
from .snapshot import SNAPSHOT_FORMAT
from .tracker import Tracker

__version__ = "0.1.0"

__all__ = [
    "Arm",
    "Artifact",
    "BUCKETS",
    "BucketMissingError",
    "Feedback",
    "FeedbackTag",
    "LoadTimeoutError",
    "MAX_ATTRS",
    "MAX_FEEDBACK_EXAMPLE_BYTES",
    "OUTCOMES_STREAM",
    "Outcome",
    "OutcomeReporter",
    "PledgerClientError",
    "ROUTING_BUCKET",
    "ROUTING_STREAM",
    "ReporterClosedError",
    "ReporterStats",
    "Resolution",
    "Resolver",
    "ResolverStats",
    "RoutedRollout",
    "RoutedStage",
    "RoutingTable",
    "SNAPSHOT_FORMAT",
    "SnapshotError",
    "Staleness",
    "TableError",
    "Tracker",
    "UnreachableError",
    "bucket",
    "outcome_subject",
    "resolve",
    "stage_matches",
]
