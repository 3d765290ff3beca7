"""The tracker: fills an outcome from the resolution and the calls, reports it once."""

from __future__ import annotations

import json
from typing import List

import pytest
from nats.js import JetStreamContext

from helpers import V1, V2, NatsServer, connect, create_outcomes_stream, stream_messages, table
from pledger_client import OUTCOMES_STREAM, Arm, Outcome, OutcomeReporter, Resolver, Tracker


class Collect:
    """A reporter that keeps what it is given (for the pure mapping tests)."""

    def __init__(self) -> None:
        self.outcomes: List[Outcome] = []

    def report(self, outcome: Outcome) -> bool:
        self.outcomes.append(outcome)
        return True


ROLLOUT = Resolver.from_tables([table("triage", candidate=V2, percent=100)])


def test_the_tracker_maps_its_calls_onto_the_outcome() -> None:
    resolution = ROLLOUT.resolve("triage", unit="user-7", attributes={"geo": "eu", "tenant": "acme"})
    sink = Collect()
    tracker = Tracker(resolution, sink, request_id="req-1")
    tracker.track_duration(250.0)
    tracker.track_tokens(100, 20)
    tracker.track_tokens(50, 5)
    tracker.track_cost(0.001)
    tracker.track_cost(0.0005)
    tracker.track_escalation()
    tracker.track_manual_correction()
    tracker.track_refusal()
    tracker.track_feedback("unexpected_refusal", "refused a password reset")
    tracker.track_success()
    assert tracker.report()
    assert not tracker.report(), "one outcome per request"
    [o] = sink.outcomes
    assert o.to_dict() == {
        "prompt": "triage",
        "version": V2,
        "release": "triage-r1",
        "arm": "candidate",
        "stage_visit": "triage-r1/0/1795000000000",
        "unit": "user-7",
        "attrs": {"geo": "eu", "tenant": "acme"},
        "request_id": "req-1",
        "fallback": False,
        "escalated": True,
        "manually_corrected": True,
        "refusal": True,
        "latency_ms": 250.0,
        "tokens_in": 150,
        "tokens_out": 25,
        "cost_usd": 0.0015,
        "feedback": {"tag": "unexpected_refusal", "example": "refused a password reset"},
    }


def test_an_error_is_a_fallback_and_success_clears_it() -> None:
    resolution = ROLLOUT.resolve("triage", unit="u")
    sink = Collect()
    t = Tracker(resolution, sink)
    t.track_error()
    t.report()
    t2 = Tracker(resolution, sink)
    t2.track_error()
    t2.track_success()
    t2.report()
    t3 = Tracker(resolution, sink)
    t3.track_fallback()
    t3.track_success()
    t3.report()
    assert [o.fallback for o in sink.outcomes] == [True, False, True]
    assert len({o.request_id for o in sink.outcomes}) == 3, "request ids are generated"


def test_the_context_manager_measures_and_counts_an_escaping_exception() -> None:
    sink = Collect()
    resolution = ROLLOUT.resolve("triage", unit="u")
    with pytest.raises(RuntimeError):
        with Tracker(resolution, sink) as t:
            t.track_tokens(1, 1)
            raise RuntimeError("model timed out")
    with Tracker(resolution, sink) as t:
        pass
    failed, fine = sink.outcomes
    assert failed.fallback and not fine.fallback
    assert failed.latency_ms > 0 and failed.tokens_in == 1


def test_nothing_is_reported_for_an_unknown_prompt() -> None:
    sink = Collect()
    assert not Tracker(ROLLOUT.resolve("nope"), sink).report()
    assert sink.outcomes == []


def test_bad_feedback_is_refused_at_once() -> None:
    t = Tracker(ROLLOUT.resolve("triage", unit="u"), Collect())
    with pytest.raises(ValueError, match="unknown feedback tag"):
        t.track_feedback("rude", "x")
    with pytest.raises(ValueError, match="over 4096"):
        t.track_feedback("hallucinated_field", "é" * 3000)


def test_more_than_32_attributes_keep_the_first_32_by_name() -> None:
    attrs = {f"k{i:02d}": "v" for i in range(40)}
    sink = Collect()
    Tracker(ROLLOUT.resolve("triage", unit="u", attributes=attrs), sink).report()
    assert sorted(sink.outcomes[0].attrs) == [f"k{i:02d}" for i in range(32)]


async def test_a_tracked_request_reaches_the_stream(server: NatsServer, js: JetStreamContext) -> None:
    await create_outcomes_stream(js)
    nc = await connect(server.url)
    try:
        reporter = OutcomeReporter(nc)
        resolver = Resolver.from_tables([table("triage", stable=V1, candidate=V2, percent=0)])
        resolution = resolver.resolve("triage", unit="user-1", attributes={"geo": "us"})
        assert resolution.arm is Arm.BASELINE
        async with reporter.tracker(resolution, request_id="r-42") as tracker:
            tracker.track_tokens(10, 2)
            tracker.track_escalation()
        await reporter.close()
        [message] = await stream_messages(js, OUTCOMES_STREAM)
        assert message.subject == "pledger.outcomes.triage"
        [o] = json.loads(message.data)
        assert (o["version"], o["arm"], o["release"], o["request_id"]) == (V1, "baseline", "triage-r1", "r-42")
        assert o["escalated"] and o["attrs"] == {"geo": "us"} and o["unit"] == "user-1"
    finally:
        await nc.close()
