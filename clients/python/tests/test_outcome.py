"""The outcome format: only the schema's fields, the workers' value rules."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from helpers import REPO_ROOT, V1
from pledger_client import Arm, Feedback, FeedbackTag, Outcome

SCHEMA: Dict[str, Any] = json.loads((REPO_ROOT / "schemas" / "outcome.schema.json").read_text())


def full() -> Outcome:
    return Outcome(
        prompt="support-triage",
        version=V1,
        request_id="r1",
        release="support-triage-r3",
        arm=Arm.CANDIDATE,
        stage_visit="support-triage-r3/1/1795000000000",
        unit="user-1",
        attrs={"geo": "eu"},
        fallback=True,
        latency_ms=1.5,
        tokens_in=3,
        tokens_out=4,
        cost_usd=0.25,
        feedback=Feedback(FeedbackTag.HALLUCINATED_FIELD, "made up a ticket id"),
    )


def test_every_field_is_in_the_schema_and_every_required_one_is_there() -> None:
    properties = set(SCHEMA["properties"])
    everything = full().to_dict()
    assert set(everything) == properties
    minimal = Outcome(prompt="p", version=V1, request_id="r").to_dict()
    assert set(minimal) == set(SCHEMA["required"]), "optional None fields are left out"
    assert set(SCHEMA["$defs"]["FeedbackTag"]["enum"]) == {t.value for t in FeedbackTag}


def test_round_trip() -> None:
    o = full()
    assert Outcome.from_dict(json.loads(json.dumps(o.to_dict()))) == o
    assert o.validate() is None


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"request_id": "  "}, "request_id must not be empty"),
        ({"latency_ms": float("inf")}, "latency_ms"),
        ({"cost_usd": -0.1}, "cost_usd"),
        ({"tokens_in": -1}, "tokens_in"),
        ({"prompt": "Support.Triage"}, "prompt name"),
        ({"version": "v1"}, "version id"),
        ({"release": "support-triage-r0"}, "release id"),
        ({"stage_visit": "support-triage-r3/01/5"}, "stage_visit"),
        ({"attrs": {f"k{i}": "v" for i in range(33)}}, "attrs"),
        ({"feedback": Feedback(FeedbackTag.HALLUCINATED_FIELD, "x" * 4097)}, "feedback.example"),
    ],
)
def test_value_rules(change: Dict[str, Any], reason: str) -> None:
    o = full()
    for k, v in change.items():
        setattr(o, k, v)
    problem = o.validate()
    assert problem is not None and reason in problem
