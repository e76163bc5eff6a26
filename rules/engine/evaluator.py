"""Evaluating compiled rules against the point history, safely.

A rule that throws (a bug, a value of a type nobody expected) must not take the other
rules of the batch down with it, nor flood the log at the poll rate: the failure is
counted, logged at most once a minute per rule, and the rule's alarm keeps its state
as if the value were unknown.
"""

from __future__ import annotations

from typing import Any

import structlog

from rules.compile import CompiledRule
from rules.expression import Context, History

log = structlog.get_logger(__name__)

LOG_EVERY = 60.0  # seconds between two log lines about the same failing rule


class Failed:
    """The result of an evaluation that raised."""


FAILED = Failed()


class Evaluator:
    """Runs rules and counts what happened."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.previous: dict[str, float] = {}  # rule id → last evaluation time (for changed())
        self.evaluations = 0
        self.errors = 0
        self._logged: dict[str, float] = {}
        self._template_names: dict[str, list[tuple[str, str]]] = {}
        self._contexts: dict[str, Context] = {}

    def truth(self, rule: CompiledRule, now: float) -> bool | None | Failed:
        """The alarm input of a `when` rule: True, False, or None (unknown: keep the state).

        Without `clear`, an unknown condition is unknown. With `clear` (a deadband),
        True when `when` holds, False when `clear` holds, unknown in between.
        """
        assert rule.when is not None
        context = self._context(rule, now)
        try:
            if rule.clear is None:
                value = rule.when.evaluate(context)
                return None if value is None else bool(value)
            if rule.when.holds(context):
                return True
            return False if rule.clear.holds(context) else None
        except Exception as exc:  # one rule's failure is contained
            return self._failed(rule, now, exc)

    def value(self, rule: CompiledRule, now: float) -> Any:
        """The value of a `derive` rule (None when unknown), or FAILED."""
        assert rule.derive is not None
        context = self._context(rule, now)
        try:
            return rule.derive.evaluate(context)
        except Exception as exc:
            return self._failed(rule, now, exc)

    def template_values(self, rule: CompiledRule) -> dict[str, Any]:
        """The latest good values of the points the rule's alarm message names."""
        names = self._template_names.get(rule.id)
        if names is None:  # joined once per rule, not at every evaluation
            names = [(point, f"{rule.device}.{point}") for point in rule.template_points]
            self._template_names[rule.id] = names
        values: dict[str, Any] = {}
        get = self.history.get
        for point, name in names:
            series = get(name)
            if series is not None and series.last_good_ts is not None:
                values[point] = series.last_good_value
        return values

    def latest_good(self, point: str) -> Any:
        series = self.history.get(point)
        return None if series is None else series.last_good_value

    def _context(self, rule: CompiledRule, now: float) -> Context:
        """The rule's context, moved to `now` (one per rule: it remembers which series
        each name means)."""
        self.evaluations += 1
        context = self._contexts.get(rule.id)
        if context is None:
            context = self._contexts[rule.id] = Context(self.history, now, device=rule.scope)
        context.now = now
        context.previous = self.previous.get(rule.id)
        self.previous[rule.id] = now
        return context

    def _failed(self, rule: CompiledRule, now: float, exc: Exception) -> Failed:
        self.errors += 1
        last = self._logged.get(rule.id)
        if last is None or now - last >= LOG_EVERY or now < last:
            self._logged[rule.id] = now
            log.error("rule evaluation failed", rule=rule.id, device=rule.device,
                      error=f"{type(exc).__name__}: {exc}", origin=rule.origin)
        return FAILED
