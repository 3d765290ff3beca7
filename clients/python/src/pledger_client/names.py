"""Names the SDK shares with the rest of pledger through NATS.

They are spelled once in the Rust core (``crates/pledger-core/src/names.rs``); these are the
same strings, and must stay so.
"""

from __future__ import annotations

#: The runtime config layer: one key per prompt holding its routing table.
ROUTING_BUCKET = "pledger_routing"
#: The stream behind :data:`ROUTING_BUCKET`.
ROUTING_STREAM = "KV_pledger_routing"
#: The stream outcomes are published to.
OUTCOMES_STREAM = "PLEDGER_OUTCOMES"
#: Every outcome subject.
OUTCOMES_SUBJECTS = "pledger.outcomes.>"


def outcome_subject(prompt: str) -> str:
    """The subject a prompt's outcomes are published on: ``pledger.outcomes.<prompt>``."""
    return f"pledger.outcomes.{prompt}"


def routing_key(prompt: str) -> str:
    """A prompt's key in :data:`ROUTING_BUCKET` (the prompt's name)."""
    return prompt
