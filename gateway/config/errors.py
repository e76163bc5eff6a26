"""Configuration errors that say where: file, line, column and key path.

A site engineer edits YAML beside the pump room; an error is only useful if it names
the exact spot and says what would be right. Every problem found while loading is one
`ConfigIssue`; the loader collects all of them and raises one `ConfigError`, so a file
with three mistakes is fixed in one round rather than three.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KeyPath = tuple[str | int, ...]


def display_path(file: str | Path | None) -> str:
    """A file as the engineer would type it: relative to the current directory when under it."""
    if file is None:
        return "<config>"
    path = Path(file)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def format_key_path(path: KeyPath) -> str:
    """`points.outlet_pressure.type`, with list positions as `devices[1].id`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one place. `line` and `col` are 1-based; None when unknown."""

    file: str | Path | None
    line: int | None
    col: int | None
    path: KeyPath
    message: str

    def location(self) -> str:
        where = display_path(self.file)
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return where

    def __str__(self) -> str:
        keys = format_key_path(self.path)
        if keys:
            return f"{self.location()} {keys}: {self.message}"
        return f"{self.location()}: {self.message}"


class ConfigError(Exception):
    """Every issue found in a configuration; str() lists them one per line."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__(self.issues)

    def __str__(self) -> str:
        count = len(self.issues)
        head = f"{count} error{'s' if count != 1 else ''} in the configuration"
        return "\n".join([head + ":", *(f"  {issue}" for issue in self.issues)])
