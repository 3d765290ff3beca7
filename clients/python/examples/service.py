#!/usr/bin/env python3
"""A service that serves a prompt through pledger: it resolves every request against the live
routing tables, "calls the model" with the artifact it resolved to, and reports each
request's outcome with a tracker.

The model is simulated (this is an example): each request escalates to a person with a
probability that depends on the arm it was served by, so a regressed candidate can be
played against its baseline::

    python examples/service.py --nats nats://127.0.0.1:4222 --prompt support-triage \\
        --candidate-escalation-rate 0.3 --baseline-escalation-rate 0.02 --until-rolled-back

It prints one JSON summary line on stdout when it ends: requests served per arm, what the
reporter published and dropped, and the routing it last saw. Exit codes: 0 when it ended as
asked (requests done, or the rollout ended), 1 on a timeout, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional

import nats

from pledger_client import Arm, OutcomeReporter, Resolution, Resolver


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS server URL")
    p.add_argument("--prompt", required=True, help="the prompt this service serves")
    p.add_argument("--requests", type=int, default=0, help="stop after this many requests (0: no limit)")
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    p.add_argument("--units", type=int, default=5000, help="distinct users (sticky unit keys)")
    p.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE", help="a request attribute (repeatable)")
    p.add_argument("--baseline-escalation-rate", type=float, default=0.02)
    p.add_argument("--candidate-escalation-rate", type=float, default=0.02)
    p.add_argument("--fallback-rate", type=float, default=0.0, help="model errors (served a fallback), on both arms")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--snapshot", help="routing snapshot file (served at start when the server is down)")
    p.add_argument(
        "--until-rolled-back",
        action="store_true",
        help="run until the prompt's rollout is gone (rolled back or completed) or frozen and routed to stable",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    for a in args.attr:
        if "=" not in a:
            p.error(f"--attr {a}: expected KEY=VALUE")
    return args


class FakeModel:
    """Stands in for an LLM call: latency, tokens, and whether the conversation escalates."""

    def __init__(self, seed: int, baseline_escalation: float, candidate_escalation: float, fallback: float) -> None:
        self.rng = random.Random(seed)
        self.escalation = {Arm.BASELINE: baseline_escalation, Arm.CANDIDATE: candidate_escalation}
        self.fallback = fallback

    def answer(self, resolution: Resolution) -> Dict[str, Any]:
        if self.rng.random() < self.fallback:
            raise TimeoutError("the model did not answer in time")
        instructions = resolution.artifact.instructions if resolution.artifact else ""
        rate = self.escalation.get(resolution.arm or Arm.BASELINE, self.escalation[Arm.BASELINE])
        return {
            "tokens_in": 200 + len(instructions) // 4 + self.rng.randint(0, 50),
            "tokens_out": 40 + self.rng.randint(0, 20),
            "latency_ms": 300.0 + self.rng.random() * 200.0,
            "escalated": self.rng.random() < rate,
        }


def rollout_over(resolver: Resolver, prompt: str) -> bool:
    """The prompt's rollout ended (rolled back or completed), or is frozen: everything goes
    to one version."""
    table = resolver.table(prompt)
    return table is not None and (table.rollout is None or table.rollout.state == "frozen")


async def serve(args: argparse.Namespace) -> int:
    attributes = dict(a.split("=", 1) for a in args.attr)
    resolver = await Resolver.start(args.nats, snapshot=args.snapshot, heartbeat=1.0)
    nc = await nats.connect(args.nats, name="pledger-example-service", max_reconnect_attempts=-1)
    reporter = OutcomeReporter(nc, max_delay=0.2)
    model = FakeModel(args.seed, args.baseline_escalation_rate, args.candidate_escalation_rate, args.fallback_rate)
    served: Dict[str, int] = {"baseline": 0, "candidate": 0, "none": 0, "unserved": 0}
    escalated: Dict[str, int] = {"baseline": 0, "candidate": 0, "none": 0}
    started = time.monotonic()
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    outcome_code = 1
    i = 0
    try:
        while True:
            if args.requests and i >= args.requests:
                outcome_code = 0
                break
            if args.until_rolled_back and rollout_over(resolver, args.prompt):
                outcome_code = 0
                break
            if time.monotonic() - started > args.timeout:
                print(f"service: gave up after {args.timeout:g} s", file=sys.stderr)
                break
            unit = f"user-{model.rng.randrange(args.units)}"
            resolution = resolver.resolve(args.prompt, unit=unit, attributes=attributes)
            i += 1
            if resolution.version is None:
                served["unserved"] += 1  # our own fallback; nothing to report to pledger
                continue
            arm = resolution.arm.value if resolution.arm else "none"
            served[arm] += 1
            try:
                with reporter.tracker(resolution) as tracker:
                    answer = model.answer(resolution)
                    tracker.track_duration(answer["latency_ms"])
                    tracker.track_tokens(answer["tokens_in"], answer["tokens_out"])
                    tracker.track_cost(0.000002 * (answer["tokens_in"] + answer["tokens_out"]))
                    if answer["escalated"]:
                        tracker.track_escalation()
                        escalated[arm] += 1
                    tracker.track_success()
            except TimeoutError:
                pass  # counted as an error (a fallback) by the tracker; serve a default answer
            # Pace the requests; yields to the resolver's watch and the reporter's publisher.
            await asyncio.sleep(interval)
        await reporter.close(timeout=30)
    finally:
        table = resolver.table(args.prompt)
        summary = {
            "requests": i,
            "served": served,
            "escalated": escalated,
            "reporter": asdict(reporter.stats()),
            "final_resolution": {
                "version": resolver.resolve(args.prompt, unit="user-0", attributes=attributes).version,
                "rollout": None if table is None or table.rollout is None else table.rollout.state,
                "stable": None if table is None else table.stable,
            },
            "staleness": asdict(resolver.staleness()),
            "seconds": round(time.monotonic() - started, 3),
        }
        print(json.dumps(summary), flush=True)
        await resolver.close()
        await nc.close()
    return outcome_code


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
