"""structlog set-up: readable on a terminal, JSON lines otherwise (journald, files).

Use `log = structlog.get_logger(__name__)` and pass device and point as fields:
`log.warning("read failed", device=..., point=..., error=...)`.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType


def _structlog_without_rich() -> ModuleType:
    """Import structlog with its optional `rich` support off.

    structlog imports rich (and rich pygments) whenever it is installed, for pretty
    tracebacks; amqtt's command line brings rich into the environment. That is 5 MiB of
    RSS and 50 ms of start-up the daemon never uses: `format_exc_info` below renders
    exceptions before any renderer sees them. Only structlog's own import is affected:
    rich stays importable for whatever else wants it. A no-op once structlog is loaded.
    """
    if "structlog" in sys.modules:
        return sys.modules["structlog"]
    hide = "rich" not in sys.modules
    if hide:
        sys.modules["rich"] = None  # type: ignore[assignment]  # makes `import rich` fail
    try:
        import structlog
    finally:
        if hide and sys.modules.get("rich", 0) is None:
            del sys.modules["rich"]
    return structlog


structlog = _structlog_without_rich()


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog once for the process; `fmt` is auto, console or json."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),
        cache_logger_on_first_use=False,
    )
    # pymodbus logs every failed connect and timeout itself; our drivers log state changes.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class _Stderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured:
    a stream swapped out since (a test's captured output, closed after it) is never
    written to."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
