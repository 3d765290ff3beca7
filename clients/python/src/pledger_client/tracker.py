"""The tracker: what happened on one request served with a resolution, turned into one
outcome event. Shaped like LaunchDarkly's AI Config tracker.

How each call maps onto the outcome (``schemas/outcome.schema.json``):

=================================  ==========================================================
tracker call                       outcome field
=================================  ==========================================================
(the resolution)                   ``prompt``, ``version``, ``release``, ``arm``,
                                   ``stage_visit``, ``unit``, ``attrs`` (at most 32, in key
                                   order)
(the tracker)                      ``request_id`` (given, or a random UUID)
``track_duration(ms)``             ``latency_ms`` (the last call wins; the context manager
                                   measures the block when it was not called)
``track_tokens(input, output)``    ``tokens_in``, ``tokens_out`` (added up over calls: one
                                   request may call the model several times)
``track_success()``                nothing is flagged; clears an earlier ``track_error()``
``track_error()``                  ``fallback = true``: the generation failed, so whatever
                                   the user got came from somewhere else (a default answer,
                                   another model, a human queue). An exception escaping the
                                   context manager counts as ``track_error()`` unless
                                   ``track_success()`` was called.
``track_fallback()``               ``fallback = true`` (sticky, whatever success says)
``track_escalation()``             ``escalated = true``
``track_manual_correction()``      ``manually_corrected = true``
``track_refusal()``                ``refusal = true``
``track_cost(usd)``                ``cost_usd`` (added up over calls)
``track_feedback(tag, example)``   ``feedback = {tag, example}`` (one per outcome; the last
                                   call wins)
=================================  ==========================================================

A refusal is not an error: the model answered, and ``refusal`` is its own guardrail signal.
"""

from __future__ import annotations

import time
import uuid
from types import TracebackType
from typing import Optional, Protocol, Type, Union

from .outcome import MAX_ATTRS, Feedback, FeedbackTag, Outcome
from .routing import Resolution


class Reporter(Protocol):
    """Anything with a non-blocking ``report`` (an :class:`~pledger_client.OutcomeReporter`)."""

    def report(self, outcome: Outcome) -> bool:
        ...


class Tracker:
    """Collects what happened on one request and reports it once, as one outcome.

    Use it directly::

        tracker = reporter.tracker(resolution)
        tracker.track_tokens(420, 90)
        tracker.track_duration(812.5)
        tracker.report()

    or as a context manager (sync or async), which measures the block's duration, counts an
    escaping exception as an error, and reports on exit::

        with reporter.tracker(resolution) as tracker:
            answer = call_model(resolution.artifact)
            tracker.track_tokens(answer.tokens_in, answer.tokens_out)
    """

    def __init__(
        self,
        resolution: Resolution,
        reporter: Reporter,
        request_id: Optional[str] = None,
    ) -> None:
        self.resolution = resolution
        self.request_id = request_id if request_id is not None else uuid.uuid4().hex
        self._reporter = reporter
        self._latency_ms: Optional[float] = None
        self._tokens_in = 0
        self._tokens_out = 0
        self._failed: Optional[bool] = None
        self._fallback = False
        self._escalated = False
        self._manually_corrected = False
        self._refusal = False
        self._cost_usd: Optional[float] = None
        self._feedback: Optional[Feedback] = None
        self._started: Optional[float] = None
        self._reported = False

    # -----------------------------------------------------------------------------------------
    # What happened
    # -----------------------------------------------------------------------------------------

    def track_duration(self, ms: float) -> None:
        """The request's latency in milliseconds (``latency_ms``)."""
        if ms < 0:
            raise ValueError(f"a duration must be >= 0 ms, not {ms}")
        self._latency_ms = float(ms)

    def track_tokens(self, input: int, output: int) -> None:
        """Tokens used (``tokens_in``/``tokens_out``), added to earlier calls."""
        if input < 0 or output < 0:
            raise ValueError("token counts must be >= 0")
        self._tokens_in += int(input)
        self._tokens_out += int(output)

    def track_success(self) -> None:
        """The generation succeeded (clears an earlier :meth:`track_error`)."""
        self._failed = False

    def track_error(self) -> None:
        """The generation failed, so the user was served something else: ``fallback``."""
        self._failed = True

    def track_fallback(self) -> None:
        """The service fell back (to a default answer, another model, a human queue)."""
        self._fallback = True

    def track_escalation(self) -> None:
        """The conversation was escalated to a person (``escalated``)."""
        self._escalated = True

    def track_manual_correction(self) -> None:
        """A person corrected the answer afterwards (``manually_corrected``)."""
        self._manually_corrected = True

    def track_refusal(self) -> None:
        """The model refused (``refusal``)."""
        self._refusal = True

    def track_cost(self, usd: float) -> None:
        """What the request cost in US dollars (``cost_usd``), added to earlier calls."""
        if not usd >= 0:
            raise ValueError(f"a cost must be >= 0 USD, not {usd}")
        self._cost_usd = (self._cost_usd or 0.0) + float(usd)

    def track_feedback(self, tag: Union[FeedbackTag, str], example: str) -> None:
        """A tagged example of a failure (``feedback``): the feedback collector turns these
        into regression cases. ``tag`` is a :class:`FeedbackTag` or its name; raises
        ``ValueError`` for an unknown tag or an example over 4096 UTF-8 bytes."""
        self._feedback = Feedback.of(tag, example)

    # -----------------------------------------------------------------------------------------
    # Reporting
    # -----------------------------------------------------------------------------------------

    @property
    def reported(self) -> bool:
        """Whether the outcome was handed to the reporter already."""
        return self._reported

    def outcome(self) -> Optional[Outcome]:
        """The outcome as it stands; ``None`` when the resolution served nothing (an unknown
        prompt, or no version): there is no pledger version to report on."""
        r = self.resolution
        if r.version is None:
            return None
        latency = self._latency_ms
        if latency is None:
            latency = (time.monotonic() - self._started) * 1000.0 if self._started is not None else 0.0
        attrs = dict(sorted(r.attributes.items())[:MAX_ATTRS])
        return Outcome(
            prompt=r.prompt,
            version=r.version,
            request_id=self.request_id,
            release=r.release,
            arm=r.arm,
            stage_visit=r.stage_visit,
            unit=r.unit,
            attrs=attrs,
            fallback=self._fallback or self._failed is True,
            escalated=self._escalated,
            manually_corrected=self._manually_corrected,
            refusal=self._refusal,
            latency_ms=latency,
            tokens_in=self._tokens_in,
            tokens_out=self._tokens_out,
            cost_usd=self._cost_usd,
            feedback=self._feedback,
        )

    def report(self) -> bool:
        """Hands the outcome to the reporter, once; never blocks. Returns whether it was
        queued (``False`` on a second call, when there is nothing to report on, or when the
        reporter dropped it)."""
        if self._reported:
            return False
        self._reported = True
        outcome = self.outcome()
        if outcome is None:
            return False
        return self._reporter.report(outcome)

    def __enter__(self) -> "Tracker":
        self._started = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is not None and self._failed is None:
            self._failed = True
        self.report()

    async def __aenter__(self) -> "Tracker":
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.__exit__(exc_type, exc, tb)
