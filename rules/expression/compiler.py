"""Syntax tree to closures: an expression is checked and compiled once, at start-up.

Every name, function call and window is resolved here, so a mistake is reported when
the configuration loads rather than when a pump trips, and evaluating an expression is
a chain of plain Python closures: no `eval`, no lookups by name of anything but points.

Missing data: a point whose latest sample is not good (or that has none) is unknown
(None). Arithmetic on unknown is unknown; a comparison with unknown is unknown; `and`,
`or` and `not` follow three-valued logic (false and unknown is false, true or unknown
is true, not unknown is unknown). A rule holds only when its condition is known and
true, so `not (outlet_pressure > 0.2)` does not fire on a dead sensor; comm loss is
caught on purpose with `stale()` or `age()`.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lark import Token, Tree

from gateway.config.models import parse_duration
from rules.expression.errors import ExpressionError, Source
from rules.expression.functions import ALIASES, FUNCTIONS, FunctionSpec, is_number
from rules.expression.history import PointHistory, Scope
from rules.expression.parser import parse
from rules.expression.windows import NUMBER

Evaluate = Callable[[Scope], Any]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression.

    `points` are the names it reads, as written (`outlet_pressure` or
    `pump_b1_1.outlet_pressure`), for the engine's point → rules index. `windows` maps
    each of them to the seconds of history it needs (0 when only the latest value is
    read), for `History.need`. `timed` is true when the value can change with time alone
    (a window slides, a value ages): the engine evaluates such expressions on its tick
    as well as when an input arrives.
    """

    text: str
    points: frozenset[str]
    windows: Mapping[str, float]
    _run: Evaluate = field(repr=False)
    timed: bool = False

    def evaluate(self, scope: Scope) -> Any:
        """The value of the expression now; None when it cannot be known."""
        return self._run(scope)

    def holds(self, scope: Scope) -> bool:
        """Whether a condition is met: known and true."""
        value = self._run(scope)
        return value is not None and bool(value)


def compile_expression(
    text: str, *, source: Source | tuple | None = None,
    known_points: Iterable[str] | None = None,
) -> Expression:
    """Check and compile `text`; raise ExpressionError naming the spot and the fix."""
    where = Source(*source) if source is not None else None
    compiler = _Compiler(text, where, set(known_points) if known_points is not None else None)
    try:
        run = compiler.compile(parse(text, where))
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply", text=text,
                              source=where) from None
    return Expression(text, frozenset(compiler.windows), dict(compiler.windows), run,
                      compiler.timed)


def _truth(value: Any) -> bool | None:
    return None if value is None else bool(value)


class _Compiler:
    """One compilation: the text for error messages, and the points and windows seen."""

    def __init__(self, text: str, source: Source | None, known: set[str] | None) -> None:
        self.text = text
        self.source = source
        self.known = known
        self.windows: dict[str, float] = {}
        self.literals: dict[Evaluate, Any] = {}
        self.timed = False
        self._condition_points: list[str] | None = None  # set while compiling count()

    def error(self, message: str, at: Tree | Token) -> ExpressionError:
        if isinstance(at, Token):
            line, col = at.line, at.column
        else:
            line, col = at.meta.line, at.meta.column
        return ExpressionError(message, text=self.text, line=line or 1, col=col or 1,
                               source=self.source)

    def need(self, point: str, seconds: float) -> None:
        self.windows[point] = max(seconds, self.windows.get(point, 0.0))

    # -- dispatch ----------------------------------------------------------------

    def compile(self, node: Tree | Token) -> Evaluate:
        method = getattr(self, f"_{node.data}", None) if isinstance(node, Tree) else None
        if method is None:  # the grammar and this compiler disagree: a bug, not user error
            raise AssertionError(f"no compiler for {node!r}")
        return method(node)

    # -- literals and names ------------------------------------------------------

    def literal(self, value: Any) -> Evaluate:
        """A constant; remembered so a comparison with it skips calling it."""
        def run(scope: Scope) -> Any:
            return value
        self.literals[run] = value
        return run

    def _number(self, node: Tree) -> Evaluate:
        text = str(node.children[0])
        return self.literal(float(text) if re.search(r"[.eE]", text) else int(text))

    def _string(self, node: Tree) -> Evaluate:
        return self.literal(_unquote(str(node.children[0])))

    def _true(self, node: Tree) -> Evaluate:
        return self.literal(True)

    def _false(self, node: Tree) -> Evaluate:
        return self.literal(False)

    def _name(self, node: Tree) -> Evaluate:
        point = self.point_name(node)
        if self._condition_points is not None:
            self._condition_points.append(point)
        self.need(point, 0.0)
        return lambda scope: scope.value(point)

    def point_name(self, node: Tree) -> str:
        """The point a `name` node refers to, checked against the known points."""
        tokens = node.children
        if tokens[0].type == "QUOTED_NAME":
            point = tokens[0][1:-1].strip()
        else:
            for token in tokens:
                if token.startswith("__"):
                    raise self.error(
                        f"'{token}' is not a point: rule expressions have no attribute "
                        f"access, and a point is named `point` or `device.point`", token)
            point = ".".join(tokens)
        if self.known is not None and point not in self.known:
            raise self.error(f"unknown point '{point}'{_suggest(point, self.known)}", node)
        return point

    # -- operators ---------------------------------------------------------------
    # Every rule runs at every poll of its points: the common shapes (two operands, a
    # point against a constant) get closures of their own, with the same results.

    def _or_test(self, node: Tree) -> Evaluate:
        parts = [self.compile(child) for child in node.children]
        if len(parts) == 2:
            first, second = parts

            def either_of_two(scope: Scope) -> bool | None:
                left = first(scope)
                if left:
                    return True
                right = second(scope)
                if right:
                    return True
                return None if left is None or right is None else False
            return either_of_two

        def either(scope: Scope) -> bool | None:
            unknown = False
            for part in parts:
                value = part(scope)
                if value is None:
                    unknown = True
                elif value:
                    return True
            return None if unknown else False
        return either

    def _and_test(self, node: Tree) -> Evaluate:
        parts = [self.compile(child) for child in node.children]
        if len(parts) == 2:
            first, second = parts

            def both_of_two(scope: Scope) -> bool | None:
                left = first(scope)
                if left is not None and not left:
                    return False
                right = second(scope)
                if right is not None and not right:
                    return False
                return None if left is None or right is None else True
            return both_of_two

        def both(scope: Scope) -> bool | None:
            unknown = False
            for part in parts:
                value = part(scope)
                if value is None:
                    unknown = True
                elif not value:
                    return False
            return None if unknown else True
        return both

    def _not_(self, node: Tree) -> Evaluate:
        part = self.compile(node.children[0])

        def negate(scope: Scope) -> bool | None:
            value = _truth(part(scope))
            return None if value is None else not value
        return negate

    def _comparison(self, node: Tree) -> Evaluate:
        # a < b < c is (a < b) and (b < c) with b evaluated once, as in Python
        operands = [self.compile(child) for child in node.children[0::2]]
        ops = [_COMPARE[str(token)] for token in node.children[1::2]]
        first, rest = operands[0], list(zip(ops, operands[1:], strict=True))
        if len(rest) == 1:
            return self._compare_two(first, *rest[0])

        def compare(scope: Scope) -> bool | None:
            left = first(scope)
            unknown = False
            for op, operand in rest:
                right = operand(scope)
                result = _compare(op, left, right)
                if result is False:
                    return False
                unknown = unknown or result is None
                left = right
            return None if unknown else True
        return compare

    def _compare_two(self, first: Evaluate, op: Callable[[Any, Any], bool],
                     second: Evaluate) -> Evaluate:
        """`a op b`: unknown when either is, or when they cannot be compared."""
        constant = self.literals.get(second)
        if constant is not None:  # a literal is never None
            def against_constant(scope: Scope) -> bool | None:
                left = first(scope)
                if left is None:
                    return None
                try:
                    return bool(op(left, constant))
                except TypeError:  # text against a number: cannot be known to hold
                    return None
            return against_constant

        def compare_two(scope: Scope) -> bool | None:
            return _compare(op, first(scope), second(scope))
        return compare_two

    def _sum(self, node: Tree) -> Evaluate:
        return self._arithmetic(node)

    def _product(self, node: Tree) -> Evaluate:
        return self._arithmetic(node)

    def _arithmetic(self, node: Tree) -> Evaluate:
        first = self.compile(node.children[0])
        rest = [(_ARITHMETIC[str(token)], self.compile(child))
                for token, child in zip(node.children[1::2], node.children[2::2], strict=True)]
        if len(rest) == 1:
            (op, second), = rest
            return lambda scope: op(first(scope), second(scope))

        def calculate(scope: Scope) -> Any:
            value = first(scope)
            for op, operand in rest:
                value = op(value, operand(scope))
            return value
        return calculate

    def _sign(self, node: Tree) -> Evaluate:
        part = self.compile(node.children[1])
        if node.children[0] == "+":
            return lambda scope: _plus(part(scope))
        return lambda scope: _minus(part(scope))

    # -- calls -------------------------------------------------------------------

    def _call(self, node: Tree) -> Evaluate:
        name_token, args = node.children[0], node.children[1:]
        spec = FUNCTIONS.get(str(name_token))
        if spec is None:
            raise self.error(_unknown_function(str(name_token)), name_token)
        self.check_arity(spec, args, name_token)
        if self._condition_points is not None and spec.reads_history:
            raise self.error(f"{spec.name}() reads history and cannot be used inside count(); "
                             f"count's condition looks at one sample at a time", name_token)
        if spec.reads_history and spec.name != "changed":
            self.timed = True  # a window slides and a value ages without a new sample
        if spec.name == "count":
            return self.count(args)
        if not spec.reads_history:
            parts = [self.compile(arg) for arg in args]
            return _scalar_call(spec, parts)
        point = self.point_argument(spec, args[0])
        seconds = [self.window_argument(spec, arg) for arg in args[1:]]
        self.need(point, max(seconds, default=0.0))
        run = spec.run
        assert run is not None
        return lambda scope: run(scope, point, *seconds)

    def check_arity(self, spec: FunctionSpec, args: list, at: Token) -> None:
        least = len(spec.args) - spec.optional
        most = None if spec.variadic else len(spec.args)
        if len(args) >= least and (most is None or len(args) <= most):
            return
        hint = ""
        if spec.name in ("min", "max") and len(args) == 1:
            hint = f'; for the {spec.name}imum over time write {spec.name}_over(point, "5m")'
        raise self.error(f"{spec.name}() got {len(args)} argument{'s' if len(args) != 1 else ''}; "
                         f"write {spec.usage}{hint}", at)

    def point_argument(self, spec: FunctionSpec, arg: Tree) -> str:
        if not (isinstance(arg, Tree) and arg.data == "name"):
            raise self.error(f"{spec.name}() reads the history of one point, so its first "
                             f"argument is a point's name; write {spec.usage}", arg)
        return self.point_name(arg)

    def window_argument(self, spec: FunctionSpec, arg: Tree) -> float:
        if not (isinstance(arg, Tree) and arg.data in ("string", "number")):
            raise self.error(f'the window of {spec.name}() is a fixed duration such as "30s", '
                             f'"5m" or "1h"; write {spec.usage}', arg)
        raw = _unquote(str(arg.children[0])) if arg.data == "string" else str(arg.children[0])
        try:
            seconds = parse_duration(raw)
        except ValueError:
            seconds = math.nan
        if not seconds > 0:
            raise self.error(f"{raw!r} is not a window; a window is a duration such as "
                             f'"30s", "5m" or "1h"', arg)
        return seconds

    def count(self, args: list) -> Evaluate:
        condition_node, window_node = args
        seconds = self.window_argument(FUNCTIONS["count"], window_node)
        self._condition_points = []
        try:
            condition = self.compile(condition_node)
            points = set(self._condition_points)
        finally:
            self._condition_points = None
        if len(points) != 1:
            raise self.error(
                "count() counts the samples of one point, so its condition names exactly "
                f"one point (it names {len(points) or 'none'}); write e.g. "
                'count(state == 3, "1h")', condition_node)
        (point,) = points
        self.need(point, seconds)

        def test(value: Any, ts: float) -> bool:
            # the condition sees one sample alone, so its history keeps each result
            return bool(condition(_SampleScope(value, ts)))

        def count(scope: Scope) -> int:
            series = scope.series(point)
            if series is None:
                return 0
            now = scope.now
            return series.count(test, now - seconds, now)
        return count


@dataclass(slots=True)
class _SampleScope:
    """The scope count()'s condition sees: its one point holds one past sample."""

    sample_value: Any
    now: float
    previous: float | None = None

    def series(self, point: str) -> PointHistory | None:
        return None

    def value(self, point: str) -> Any:
        return self.sample_value


def _scalar_call(spec: FunctionSpec, parts: list[Evaluate]) -> Evaluate:
    run = spec.run
    assert run is not None
    if len(parts) == 1:
        (only,) = parts
        return lambda scope: run(only(scope))
    if len(parts) == 2:
        first, second = parts
        return lambda scope: run(first(scope), second(scope))
    if len(parts) == 3:
        first, second, third = parts
        return lambda scope: run(first(scope), second(scope), third(scope))
    return lambda scope: run(*[part(scope) for part in parts])


def _compare(op: Callable[[Any, Any], bool], left: Any, right: Any) -> bool | None:
    if left is None or right is None:
        return None
    try:
        return bool(op(left, right))
    except TypeError:  # text against a number: cannot be known to hold
        return None


def _numeric(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    # Numbers only: "text" * 10**9 would be a memory bomb, and unknown stays unknown.
    # (is_number inlined: NaN is the one number unequal to itself)
    def apply(left: Any, right: Any) -> Any:
        if not (isinstance(left, NUMBER) and left == left
                and isinstance(right, NUMBER) and right == right):
            return None
        try:
            return op(left, right)
        except (ZeroDivisionError, OverflowError):
            return None
    return apply


_ARITHMETIC = {
    "+": _numeric(operator.add), "-": _numeric(operator.sub), "*": _numeric(operator.mul),
    "/": _numeric(operator.truediv), "%": _numeric(operator.mod),
}


def _plus(value: Any) -> Any:
    return value if is_number(value) else None


def _minus(value: Any) -> Any:
    return -value if is_number(value) else None


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def _suggest(name: str, choices: Iterable[str]) -> str:
    matches = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if matches:
        return "; did you mean " + " or ".join(matches) + "?"
    return ""


def _unknown_function(name: str) -> str:
    alias = ALIASES.get(name)
    hint = f"; did you mean {alias}?" if alias else _suggest(name, FUNCTIONS)
    return f"unknown function '{name}'{hint} (functions: {', '.join(FUNCTIONS)})"
