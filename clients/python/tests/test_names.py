"""The names the SDK shares through NATS are the Rust core's (crates/pledger-core/src/names.rs)."""

from __future__ import annotations

import re

from helpers import REPO_ROOT
from pledger_client import names

NAMES_RS = (REPO_ROOT / "crates" / "pledger-core" / "src" / "names.rs").read_text()


def rust_const(name: str) -> str:
    match = re.search(rf'pub const {name}: &str = "([^"]+)";', NAMES_RS)
    assert match, f"{name} is not in names.rs"
    return match.group(1)


def test_the_constants_match_names_rs() -> None:
    for name in ("ROUTING_BUCKET", "ROUTING_STREAM", "OUTCOMES_STREAM", "OUTCOMES_SUBJECTS"):
        assert getattr(names, name) == rust_const(name), name


def test_the_outcome_subject_matches_names_rs() -> None:
    assert 'format!("pledger.outcomes.{prompt}")' in NAMES_RS
    assert names.outcome_subject("support-triage") == "pledger.outcomes.support-triage"
