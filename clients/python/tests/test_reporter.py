"""The outcome reporter against a real nats-server: batches under max_payload, drops counted,
close drains."""

from __future__ import annotations

import json
from typing import Any, Dict, List

from nats.js import JetStreamContext

from helpers import NatsServer, V1, connect, create_outcomes_stream, stream_messages
from pledger_client import OUTCOMES_STREAM, Arm, Feedback, FeedbackTag, Outcome, OutcomeReporter

#: Every field an outcome may carry (the workers refuse any other).
DOCUMENTED = {
    "prompt", "version", "release", "arm", "stage_visit", "unit", "attrs", "request_id",
    "fallback", "escalated", "manually_corrected", "refusal", "latency_ms", "tokens_in",
    "tokens_out", "cost_usd", "feedback",
}


def outcome(i: int, prompt: str = "triage", **fields: Any) -> Outcome:
    values: Dict[str, Any] = dict(
        prompt=prompt,
        version=V1,
        request_id=f"req-{i}",
        release=f"{prompt}-r1",
        arm=Arm.BASELINE if i % 2 else Arm.CANDIDATE,
        stage_visit=f"{prompt}-r1/0/1795000000000",
        unit=f"user-{i}",
        attrs={"geo": "eu", "padding": "x" * 100},
        latency_ms=12.5,
        tokens_in=100,
        tokens_out=20,
    )
    values.update(fields)
    return Outcome(**values)


async def published(js: JetStreamContext) -> List[Dict[str, Any]]:
    items: List[Dict[str, Any]] = []
    for message in await stream_messages(js, OUTCOMES_STREAM):
        batch = json.loads(message.data)
        assert isinstance(batch, list)
        items.extend(batch)
    return items


async def test_batches_stay_under_max_payload_and_close_drains(small_server: NatsServer) -> None:
    nc = await connect(small_server.url)
    try:
        assert nc.max_payload == 2048
        js = nc.jetstream()
        await create_outcomes_stream(js)
        reporter = OutcomeReporter(nc, max_delay=30.0)
        for i in range(120):
            assert reporter.report(outcome(i, prompt="triage" if i % 3 else "summary"))
        # Alone over the 2 KiB limit: dropped and counted, never sent.
        assert reporter.report(outcome(999, feedback=Feedback(FeedbackTag.EXCESSIVE_VERBOSITY, "y" * 3000)))
        # Breaks a value rule the workers enforce: dropped and counted.
        assert reporter.report(outcome(998, latency_ms=-1.0))
        # max_delay is 30 s: only close() publishes these.
        await reporter.close()
        stats = reporter.stats()
        assert stats.reported == 122
        assert stats.published_outcomes == 120
        assert (stats.dropped_too_large, stats.dropped_invalid, stats.queued) == (1, 1, 0)
        assert stats.published_messages > 120 * 300 // 2048, "batched several to a message"

        messages = await stream_messages(js, OUTCOMES_STREAM)
        assert len(messages) == stats.published_messages
        for m in messages:
            headers_size = sum(len(k) + len(v) + 4 for k, v in (m.headers or {}).items()) + 12
            assert len(m.data) + headers_size <= 2048
            batch = json.loads(m.data)
            prompts = {o["prompt"] for o in batch}
            assert len(prompts) == 1 and m.subject == f"pledger.outcomes.{prompts.pop()}"
        items = await published(js)
        assert sorted(o["request_id"] for o in items) == sorted(f"req-{i}" for i in range(120))
        for o in items:
            assert set(o) <= DOCUMENTED
            assert "cost_usd" not in o and "feedback" not in o, "None fields are left out"

        # Closed: later outcomes are dropped and counted.
        assert not reporter.report(outcome(1000))
        assert reporter.stats().dropped_closed == 1
    finally:
        await nc.close()


async def test_flush_publishes_what_was_reported(server: NatsServer, js: JetStreamContext) -> None:
    await create_outcomes_stream(js)
    nc = await connect(server.url)
    try:
        reporter = OutcomeReporter(nc, max_delay=30.0)
        for i in range(10):
            reporter.report(outcome(i, cost_usd=0.002, feedback=Feedback(FeedbackTag.UNEXPECTED_REFUSAL, "no")))
        await reporter.flush(timeout=10)
        stats = reporter.stats()
        assert (stats.published_outcomes, stats.published_messages, stats.queued) == (10, 1, 0)
        items = await published(js)
        assert items[0]["cost_usd"] == 0.002
        assert items[0]["feedback"] == {"tag": "unexpected_refusal", "example": "no"}
        assert items[0]["arm"] == "candidate" and items[1]["arm"] == "baseline"
        await reporter.close()
    finally:
        await nc.close()


async def test_a_full_queue_drops_and_counts(server: NatsServer, js: JetStreamContext) -> None:
    await create_outcomes_stream(js)
    nc = await connect(server.url)
    try:
        reporter = OutcomeReporter(nc, capacity=10, max_delay=30.0)
        # report() never yields to the event loop: the queue fills up.
        accepted = [reporter.report(outcome(i)) for i in range(15)]
        assert accepted == [True] * 10 + [False] * 5
        await reporter.close()
        stats = reporter.stats()
        assert (stats.reported, stats.dropped_queue_full, stats.published_outcomes) == (10, 5, 10)
        assert stats.dropped == 5
    finally:
        await nc.close()


async def test_failed_publishes_are_retried_then_counted(server: NatsServer) -> None:
    # No PLEDGER_OUTCOMES stream: nothing acknowledges the publishes.
    nc = await connect(server.url)
    try:
        reporter = OutcomeReporter(nc, max_batch=4, publish_timeout=0.5, max_attempts=2, retry_backoff=0.01)
        for i in range(10):
            reporter.report(outcome(i))
        await reporter.close(timeout=20)
        stats = reporter.stats()
        assert stats.published_outcomes == 0
        assert stats.publish_failures == 3  # 4 + 4 + 2
        assert stats.dropped_publish_failed == 10
        assert stats.publish_retries == 3
        assert stats.queued == 0
    finally:
        await nc.close()
