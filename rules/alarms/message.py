"""Alarm message templates: `出水压力低 {outlet_pressure:.2f} MPa`, filled from point values.

Python's format mini-language is what engineers already know, but `str.format` also
follows attributes and indexes (`{x.__class__}`), so a template may name plain points
only, checked once when the alarm is defined. Rendering never fails: a point with no
value shows as `?`, and a value the spec does not fit (text under `.2f`) shows as is,
because a message with a gap beats an alarm that cannot be raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Formatter
from typing import Any

MISSING = "?"
_FORMATTER = Formatter()


def check_template(template: str) -> set[str]:
    """The point names a template uses; ValueError when it is not a safe template."""
    names: set[str] = set()
    try:
        fields = list(_FORMATTER.parse(template))
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"message template {template!r}: {exc}") from None
    for _literal, name, spec, _conversion in fields:
        if name is None:
            continue
        if not name or name.isdigit():
            raise ValueError(f"message template {template!r}: name the point in {{}}, e.g. {{outlet_pressure}}")
        if any(c in name for c in ".[]"):
            raise ValueError(f"message template {template!r}: {{{name}}} must be a plain point name")
        if spec and "{" in spec:
            raise ValueError(f"message template {template!r}: nested fields are not allowed in {{{name}:{spec}}}")
        names.add(name)
    return names


def render_message(template: str, values: Mapping[str, Any]) -> str:
    """The template filled from `values` (checked by `check_template` beforehand)."""
    parts: list[str] = []
    for literal, name, spec, conversion in _FORMATTER.parse(template):
        parts.append(literal)
        if name is None:
            continue
        value = values.get(name)
        if value is None:
            parts.append(MISSING)
            continue
        if conversion:
            value = _FORMATTER.convert_field(value, conversion)
        try:
            parts.append(format(value, spec or ""))
        except (ValueError, TypeError):
            parts.append(str(value))
    return "".join(parts)
