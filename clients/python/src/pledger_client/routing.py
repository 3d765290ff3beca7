"""Routing tables and the sticky, deterministic resolution of a request to a prompt version.

This module is pure: no I/O, no clock, no randomness. It mirrors the Rust core
(``crates/pledger-core/src/routing.rs``: ``bucket``, ``stage_matches``, ``resolve``) bit for
bit; the shared vectors in ``clients/vectors/resolve.json`` check that.

A routing table is the JSON value of a prompt's key in the ``pledger_routing`` KV bucket
(schema: ``schemas/routing-table.schema.json``). Fields this SDK does not know (written by a
newer pledger) are ignored; a value that does not have the fields it needs with the right
types raises :class:`TableError`, naming the path of the offending value.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

#: Buckets per unit key: percentages resolve to 1/100 of a percent.
BUCKETS = 10_000

#: The rollout state in which every request goes to the baseline.
FROZEN = "frozen"


class Arm(str, Enum):
    """Which side of a rollout's experiment a request is on."""

    #: The release's baseline (the stable version) during a rollout: the control.
    BASELINE = "baseline"
    #: The release's candidate version.
    CANDIDATE = "candidate"

    def __str__(self) -> str:
        return self.value


class TableError(ValueError):
    """A routing table that does not decode. ``path`` names the value that fails
    (``rollout.stages[0].percent``), or ``routing`` for the value as a whole."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Artifact:
    """A prompt version's content, as the routing table carries it.

    The named fields are the ones services use; ``raw`` is the whole JSON object, fields a
    newer pledger added included.
    """

    instructions: str
    model: Mapping[str, Any]
    tools: Mapping[str, Any]
    known_limitations: Tuple[str, ...]
    notes: Optional[str]
    retrieval: Optional[Mapping[str, Any]]
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class RoutedStage:
    """A rollout stage up to (and including) the current one."""

    name: str
    #: Attribute name -> accepted values (one value in JSON is a one-element tuple here).
    matches: Mapping[str, Tuple[str, ...]]
    percent: float

    @property
    def share(self) -> int:
        """The candidate's share in buckets: ``round(percent * 100)`` as Rust computes it
        (half away from zero, saturating to ``0..=2**32-1`` like ``f64 as u32``)."""
        return _share(self.percent)


@dataclass(frozen=True)
class RoutedRollout:
    """The rollout in progress on a prompt."""

    release: str
    candidate: str
    #: ``rolling_out``, ``paused`` or ``frozen``. A frozen rollout routes everything to stable.
    state: str
    current_stage: str
    bucketing_salt: str
    stages: Tuple[RoutedStage, ...]
    #: ``<release>/<stage index>/<entered at, unix ms>``; ``None`` from an older pledger.
    stage_visit: Optional[str] = None


@dataclass(frozen=True)
class RoutingTable:
    """The value of a prompt's key in the ``pledger_routing`` KV bucket."""

    prompt: str
    #: The version all traffic gets outside the candidate's share.
    stable: Optional[str]
    #: The ledger sequence (of the prompt's family) this table was derived from.
    ledger_sequence: int
    rollout: Optional[RoutedRollout] = None
    #: Version id -> content of the versions this table routes to.
    artifacts: Mapping[str, Artifact] = field(default_factory=dict)
    #: The JSON object as received (unknown fields included): what snapshots store.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Union[bytes, str]) -> "RoutingTable":
        """Decodes a table from its KV value; raises :class:`TableError`."""
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise TableError("routing", f"not JSON: {e}") from None
        return cls.from_dict(value)

    @classmethod
    def from_dict(cls, value: Any) -> "RoutingTable":
        """Decodes a table from parsed JSON; raises :class:`TableError`."""
        obj = _object(value, "routing")
        prompt = _string(_required(obj, "prompt", "routing"), "prompt")
        stable = _optional_string(obj.get("stable"), "stable")
        sequence = _unsigned(_required(obj, "ledger_sequence", "routing"), "ledger_sequence")
        rollout_value = obj.get("rollout")
        rollout = None if rollout_value is None else _rollout(rollout_value)
        artifacts: Dict[str, Artifact] = {}
        artifacts_value = obj.get("artifacts")
        if artifacts_value is not None:
            for version, artifact in _object(artifacts_value, "artifacts").items():
                artifacts[version] = _artifact(artifact, f"artifacts.{version}")
        return cls(
            prompt=prompt,
            stable=stable,
            ledger_sequence=sequence,
            rollout=rollout,
            artifacts=artifacts,
            raw=obj,
        )

    def to_dict(self) -> Dict[str, Any]:
        """The table's JSON object, as received."""
        return dict(self.raw)


@dataclass(frozen=True)
class Resolution:
    """Which version a request gets, with the content to serve.

    ``version`` is ``None`` when there is nothing to serve (an unknown prompt, or a prompt
    without a stable version outside the candidate's share): the service serves its own
    fallback. ``release``, ``arm`` and ``stage_visit`` are set only during a rollout.
    """

    prompt: str
    version: Optional[str] = None
    release: Optional[str] = None
    arm: Optional[Arm] = None
    stage_visit: Optional[str] = None
    #: The content of ``version``, when the table carries it.
    artifact: Optional[Artifact] = None
    #: The ledger sequence of the table that answered (0 for an unknown prompt).
    ledger_sequence: int = 0
    #: The request's sticky unit key, as given to ``resolve``.
    unit: Optional[str] = None
    #: The request's attributes, as given to ``resolve``.
    attributes: Mapping[str, str] = field(default_factory=dict)
    #: Whether a routing table for the prompt was known at all.
    known: bool = False

    @property
    def is_candidate(self) -> bool:
        """Whether the request was sent to a rollout's candidate."""
        return self.arm is Arm.CANDIDATE


def bucket(salt: str, unit: str) -> int:
    """The sticky bucket of a unit key under a salt, in ``0..10000``: SHA-256 of
    ``salt:unit`` (UTF-8), first 8 bytes big-endian, modulo :data:`BUCKETS`."""
    digest = hashlib.sha256(f"{salt}:{unit}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def stage_matches(matches: Mapping[str, Tuple[str, ...]], attributes: Mapping[str, str]) -> bool:
    """Does a request with ``attributes`` match a stage's ``match`` (every key, any listed
    value)? A stage without ``match`` matches every request."""
    for key, accepted in matches.items():
        value = attributes.get(key)
        if value is None or value not in accepted:
            return False
    return True


def resolve(
    table: RoutingTable,
    unit: Optional[str] = None,
    attributes: Optional[Mapping[str, str]] = None,
) -> Resolution:
    """Resolves a request against ``table``: the same answer as the Rust core's ``resolve``.

    Without a unit key, only stages at 100% can send a request to the candidate (there is
    nothing to stick a partial share to).
    """
    # A copy: the resolution (and the outcome built from it) keeps the request as it was.
    attrs: Mapping[str, str] = dict(attributes) if attributes else {}
    rollout = table.rollout

    def answer(
        version: Optional[str],
        release: Optional[str],
        arm: Optional[Arm],
        stage_visit: Optional[str],
    ) -> Resolution:
        return Resolution(
            prompt=table.prompt,
            version=version,
            release=release,
            arm=arm,
            stage_visit=stage_visit,
            artifact=table.artifacts.get(version) if version is not None else None,
            ledger_sequence=table.ledger_sequence,
            unit=unit,
            attributes=attrs,
            known=True,
        )

    if rollout is None:
        return answer(table.stable, None, None, None)
    if rollout.state != FROZEN:
        share = max(
            (s.share for s in rollout.stages if stage_matches(s.matches, attrs)),
            default=0,
        )
        if share >= BUCKETS:
            candidate = True
        elif unit is not None and share > 0:
            candidate = bucket(rollout.bucketing_salt, unit) < share
        else:
            candidate = False
        if candidate:
            return answer(rollout.candidate, rollout.release, Arm.CANDIDATE, rollout.stage_visit)
    return answer(table.stable, rollout.release, Arm.BASELINE, rollout.stage_visit)


def unknown(prompt: str, unit: Optional[str], attributes: Optional[Mapping[str, str]]) -> Resolution:
    """The empty resolution of a prompt no table is known for."""
    return Resolution(prompt=prompt, unit=unit, attributes=dict(attributes) if attributes else {})


# ---------------------------------------------------------------------------------------------
# Rust's numeric conversions
# ---------------------------------------------------------------------------------------------

_U32_MAX = 2**32 - 1


def _round_half_away(x: float) -> float:
    """``f64::round``: half-way cases away from zero (Python's ``round`` rounds to even)."""
    whole = math.trunc(x)
    if abs(x - whole) >= 0.5:
        whole += 1 if x > 0 else -1
    return float(whole)


def _share(percent: float) -> int:
    scaled = percent * 100.0
    if math.isnan(scaled):
        return 0  # `NaN as u32` is 0
    if math.isinf(scaled):
        return _U32_MAX if scaled > 0 else 0
    rounded = _round_half_away(scaled)
    return int(min(max(rounded, 0.0), float(_U32_MAX)))


# ---------------------------------------------------------------------------------------------
# Decoding helpers: each names the path of the value it refuses.
# ---------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _object(value: Any, path: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise TableError(path, f"expected an object, found {_type_name(value)}")
    return value


def _required(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise TableError(path, f"missing field `{key}`")
    return obj[key]


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise TableError(path, f"expected a string, found {_type_name(value)}")
    return value


def _optional_string(value: Any, path: str) -> Optional[str]:
    return None if value is None else _string(value, path)


def _unsigned(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TableError(path, f"expected an unsigned integer, found {_type_name(value)}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TableError(path, f"expected a number, found {_type_name(value)}")
    return float(value)


def _strings(value: Any, path: str) -> Tuple[str, ...]:
    if not isinstance(value, list):
        raise TableError(path, f"expected an array, found {_type_name(value)}")
    return tuple(_string(v, f"{path}[{i}]") for i, v in enumerate(value))


def _rollout(value: Any) -> RoutedRollout:
    path = "rollout"
    obj = _object(value, path)
    stages: List[RoutedStage] = []
    for i, stage in enumerate(_list(_required(obj, "stages", path), f"{path}.stages")):
        stages.append(_stage(stage, f"{path}.stages[{i}]"))
    return RoutedRollout(
        release=_string(_required(obj, "release", path), f"{path}.release"),
        candidate=_string(_required(obj, "candidate", path), f"{path}.candidate"),
        state=_string(_required(obj, "state", path), f"{path}.state"),
        current_stage=_string(_required(obj, "current_stage", path), f"{path}.current_stage"),
        bucketing_salt=_string(_required(obj, "bucketing_salt", path), f"{path}.bucketing_salt"),
        stages=tuple(stages),
        stage_visit=_optional_string(obj.get("stage_visit"), f"{path}.stage_visit"),
    )


def _list(value: Any, path: str) -> List[Any]:
    if not isinstance(value, list):
        raise TableError(path, f"expected an array, found {_type_name(value)}")
    return value


def _stage(value: Any, path: str) -> RoutedStage:
    obj = _object(value, path)
    matches: Dict[str, Tuple[str, ...]] = {}
    match_value = obj.get("match")
    if match_value is not None:
        for key, want in _object(match_value, f"{path}.match").items():
            where = f"{path}.match.{key}"
            matches[key] = (want,) if isinstance(want, str) else _strings(want, where)
    return RoutedStage(
        name=_string(_required(obj, "name", path), f"{path}.name"),
        matches=matches,
        percent=_number(_required(obj, "percent", path), f"{path}.percent"),
    )


def _artifact(value: Any, path: str) -> Artifact:
    obj = _object(value, path)
    retrieval = obj.get("retrieval")
    return Artifact(
        instructions=_string(_required(obj, "instructions", path), f"{path}.instructions"),
        model=_object(_required(obj, "model", path), f"{path}.model"),
        tools=_object(_required(obj, "tools", path), f"{path}.tools"),
        known_limitations=_strings(obj.get("known_limitations", []), f"{path}.known_limitations"),
        notes=_optional_string(obj.get("notes"), f"{path}.notes"),
        retrieval=None if retrieval is None else _object(retrieval, f"{path}.retrieval"),
        raw=obj,
    )
