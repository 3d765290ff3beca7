"""Outcome events: what a service reports about each request served with a prompt version.

The JSON format is a contract with the pledger workers (``schemas/outcome.schema.json``,
``crates/pledger-core/src/outcome.rs``), which refuse unknown fields: :meth:`Outcome.to_dict`
emits only the documented fields and leaves out optional ones that are ``None``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Mapping, Optional, Union

from .routing import Arm

#: Longest feedback example the workers keep (UTF-8 bytes); longer ones are refused.
MAX_FEEDBACK_EXAMPLE_BYTES = 4096
#: Most request attributes per outcome.
MAX_ATTRS = 32

#: Longest prompt name.
MAX_PROMPT_NAME_LEN = 64

_PROMPT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_VERSION = re.compile(r"^sha256:[0-9a-f]{64}$")
_RELEASE = re.compile(r"^([a-z0-9][a-z0-9_-]*)-r[1-9][0-9]*$")
# `<release>/<stage index>/<entered at, unix ms>`, numbers in canonical form (as Rust's
# `StageVisit::parse`, which requires the text to write back identically).
_STAGE_VISIT = re.compile(r"^[a-z0-9][a-z0-9_-]*-r[1-9][0-9]*/(?:0|[1-9][0-9]*)/(?:0|-?[1-9][0-9]*)$")


class FeedbackTag(str, Enum):
    """What went wrong, as a regression case the next release's eval bundle must cover."""

    UNEXPECTED_REFUSAL = "unexpected_refusal"
    WRONG_TOOL_SEQUENCE = "wrong_tool_sequence"
    HALLUCINATED_FIELD = "hallucinated_field"
    EXCESSIVE_VERBOSITY = "excessive_verbosity"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Feedback:
    """A tagged example of a failure (the workers redact it before storing it)."""

    tag: FeedbackTag
    example: str

    @classmethod
    def of(cls, tag: Union[FeedbackTag, str], example: str) -> "Feedback":
        """Builds feedback from a tag or its name; raises ``ValueError`` for an unknown tag
        or an example over :data:`MAX_FEEDBACK_EXAMPLE_BYTES`."""
        try:
            parsed = tag if isinstance(tag, FeedbackTag) else FeedbackTag(tag)
        except ValueError:
            known = ", ".join(t.value for t in FeedbackTag)
            raise ValueError(f"unknown feedback tag `{tag}` (known: {known})") from None
        size = len(example.encode("utf-8"))
        if size > MAX_FEEDBACK_EXAMPLE_BYTES:
            raise ValueError(
                f"feedback example is {size} bytes, over {MAX_FEEDBACK_EXAMPLE_BYTES}"
            )
        return cls(tag=parsed, example=example)


@dataclass
class Outcome:
    """One request's outcome. Field names and meanings are those of the JSON schema."""

    prompt: str
    #: The version that served the request.
    version: str
    request_id: str
    #: The release whose rollout assigned the arm, when known.
    release: Optional[str] = None
    #: ``candidate`` or ``baseline``, when known.
    arm: Optional[Arm] = None
    #: The routing table's ``rollout.stage_visit`` the request was resolved under.
    stage_visit: Optional[str] = None
    #: The sticky unit key the request was bucketed by.
    unit: Optional[str] = None
    #: Request attributes (at most :data:`MAX_ATTRS`).
    attrs: Dict[str, str] = field(default_factory=dict)
    #: The service fell back (to a default answer, another model, a human queue).
    fallback: bool = False
    #: The conversation was escalated to a person.
    escalated: bool = False
    #: A person corrected the answer afterwards.
    manually_corrected: bool = False
    #: The model refused.
    refusal: bool = False
    latency_ms: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Optional[float] = None
    feedback: Optional[Feedback] = None

    def validate(self) -> Optional[str]:
        """The first value rule this outcome breaks (the workers would refuse it), or
        ``None``. The same rules as the Rust ``Outcome::validate``, plus the types."""
        for name in ("prompt", "version", "request_id"):
            if not isinstance(getattr(self, name), str):
                return f"{name} must be a string"
        if not self.request_id.strip():
            return "request_id must not be empty"
        if len(self.prompt) > MAX_PROMPT_NAME_LEN or not _PROMPT.match(self.prompt):
            return f"`{self.prompt}` is not a valid prompt name"
        if not _VERSION.match(self.version):
            return f"`{self.version}` is not a version id (sha256: and 64 lowercase hex digits)"
        if self.release is not None:
            release = _RELEASE.match(self.release) if isinstance(self.release, str) else None
            if release is None or len(release.group(1)) > MAX_PROMPT_NAME_LEN:
                return f"`{self.release}` is not a release id (<prompt>-r<number>)"
        if self.arm is not None and self.arm not in (Arm.BASELINE, Arm.CANDIDATE):
            return f"arm `{self.arm}` is neither baseline nor candidate"
        for name in ("fallback", "escalated", "manually_corrected", "refusal"):
            if not isinstance(getattr(self, name), bool):
                return f"{name} must be a boolean"
        latency = self.latency_ms
        if isinstance(latency, bool) or not isinstance(latency, (int, float)):
            return "latency_ms must be a number"
        if not (math.isfinite(latency) and latency >= 0):
            return f"latency_ms {latency} must be a finite number >= 0"
        for name in ("tokens_in", "tokens_out"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**64:
                return f"{name} must be an integer >= 0"
        if self.cost_usd is not None:
            c = self.cost_usd
            if isinstance(c, bool) or not isinstance(c, (int, float)):
                return "cost_usd must be a number"
            if not (math.isfinite(c) and c >= 0):
                return f"cost_usd {c} must be a finite number >= 0"
        if self.stage_visit is not None and not _STAGE_VISIT.match(self.stage_visit):
            return f"stage_visit `{self.stage_visit}` is not <release>/<stage index>/<entered at, unix ms>"
        if len(self.attrs) > MAX_ATTRS:
            return f"{len(self.attrs)} attrs is over the limit of {MAX_ATTRS}"
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.attrs.items()):
            return "attrs must map strings to strings"
        if self.feedback is not None:
            if self.feedback.tag not in tuple(FeedbackTag):
                return f"unknown feedback tag `{self.feedback.tag}`"
            size = len(self.feedback.example.encode("utf-8"))
            if size > MAX_FEEDBACK_EXAMPLE_BYTES:
                return f"feedback.example is {size} bytes, over {MAX_FEEDBACK_EXAMPLE_BYTES}"
        return None

    def to_dict(self) -> Dict[str, Any]:
        """The outcome's JSON object: documented fields only, optional ones only when set."""
        out: Dict[str, Any] = {"prompt": self.prompt, "version": self.version}
        if self.release is not None:
            out["release"] = self.release
        if self.arm is not None:
            out["arm"] = Arm(self.arm).value
        if self.stage_visit is not None:
            out["stage_visit"] = self.stage_visit
        if self.unit is not None:
            out["unit"] = self.unit
        if self.attrs:
            out["attrs"] = dict(sorted(self.attrs.items()))
        out["request_id"] = self.request_id
        out["fallback"] = self.fallback
        out["escalated"] = self.escalated
        out["manually_corrected"] = self.manually_corrected
        out["refusal"] = self.refusal
        out["latency_ms"] = float(self.latency_ms)
        out["tokens_in"] = self.tokens_in
        out["tokens_out"] = self.tokens_out
        if self.cost_usd is not None:
            out["cost_usd"] = float(self.cost_usd)
        if self.feedback is not None:
            out["feedback"] = {
                "tag": FeedbackTag(self.feedback.tag).value,
                "example": self.feedback.example,
            }
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "Outcome":
        """Reads an outcome back from its JSON object (tests, tools)."""
        feedback = value.get("feedback")
        arm = value.get("arm")
        return cls(
            prompt=value["prompt"],
            version=value["version"],
            request_id=value["request_id"],
            release=value.get("release"),
            arm=None if arm is None else Arm(arm),
            stage_visit=value.get("stage_visit"),
            unit=value.get("unit"),
            attrs=dict(value.get("attrs", {})),
            fallback=value["fallback"],
            escalated=value["escalated"],
            manually_corrected=value["manually_corrected"],
            refusal=value["refusal"],
            latency_ms=value["latency_ms"],
            tokens_in=value["tokens_in"],
            tokens_out=value["tokens_out"],
            cost_usd=value.get("cost_usd"),
            feedback=None
            if feedback is None
            else Feedback(FeedbackTag(feedback["tag"]), feedback["example"]),
        )
