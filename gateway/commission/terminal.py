"""What the commissioning commands draw on a terminal: progress bars and redrawn tables.

Only on a terminal: piped, redirected or under CI the commands print plain lines and
no escape code. rich is imported here, when a bar or a redraw is first shown, so the
daemon and the other commands never load it (and gateway/logs.py keeps it from
structlog).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import IO, Any

SHOW_AFTER = 1.0  # seconds: quicker work gets no bar


def interactive(stream: IO[str]) -> bool:
    """A terminal that can take escape codes (not a pipe, a file, or TERM=dumb)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM") != "dumb"


class Progress:
    """A bar on stderr for work of `total` steps, shown once it has taken a second.

    Use as a context manager inside a running event loop; `advance()` or `update()` as
    steps finish. Off (does nothing) when stderr is not a terminal or `enabled` is false.
    """

    def __init__(self, what: str, total: int, *, enabled: bool = True) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.enabled = enabled and interactive(sys.stderr)
        self._bar: Any = None
        self._task: Any = None
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._timer = asyncio.get_running_loop().call_later(SHOW_AFTER, self._show)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def advance(self, steps: int = 1, what: str | None = None) -> None:
        self.update(self.done + steps, what)

    def update(self, done: int, what: str | None = None) -> None:
        self.done = done
        if what is not None:
            self.what = what
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=self.what)

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(file=sys.stderr), transient=True,
        )
        self._task = self._bar.add_task(self.what, total=self.total, completed=self.done)
        self._bar.start()


class Screen:
    """Rounds of output (`gateway probe --watch`): redrawn in place on a terminal, one
    after the other otherwise."""

    def __init__(self, *, redraw: bool) -> None:
        self.redraw = redraw and interactive(sys.stdout)
        self._live: Any = None

    def show(self, text: str) -> None:
        if not self.redraw:
            print(text, flush=True)
            return
        from rich.text import Text

        shown = Text(text, no_wrap=True, overflow="ellipsis")  # a wrapped table is unreadable
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(shown, console=Console(), auto_refresh=False,
                              vertical_overflow="visible")
            self._live.start()
        self._live.update(shown, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()  # the last round stays on the screen
            self._live = None
