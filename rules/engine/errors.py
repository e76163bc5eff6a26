"""Refusals of engine commands that are not about an alarm's or a ticket's state.

`AlarmError` and `TicketError` already say why a state refuses a step; what is left is an
id nobody knows (a typo in the CLI, a stale id from the platform). The text is read by an
operator, so it names the closest known id.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RuleCommandError(ValueError):
    """A command the engine cannot carry out: an unknown alarm, ticket, device or step."""


def unknown(what: str, name: str, known: Iterable[str]) -> RuleCommandError:
    """`no alarm 'pump_b1_1.low_presure'; did you mean pump_b1_1.low_pressure?`"""
    choices = sorted(set(known))
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        hint = f"; did you mean {close[0]}?"
    elif not choices:
        hint = f" (there are no {what}s)"
    elif len(choices) <= 5:
        hint = f" (known: {', '.join(choices)})"
    else:
        hint = ""
    return RuleCommandError(f"no {what} {name!r}{hint}")
