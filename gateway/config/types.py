"""The building blocks every configuration model uses: ids, durations, sizes, text.

Kept apart from the models so rule, device and site models can share them without
importing each other.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# Unicode word characters: ids may be Chinese; no spaces or slashes (they become topics and tags).
ID_PATTERN = r"^\w[\w.-]*$"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like '500ms', '5s', '2m', '1h', '30d'."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 500ms, 2m or 1h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration; expected e.g. 5s, 500ms, 2m or 1h")


def parse_size(value: Any) -> int:
    """Bytes from a number or a string like '512MB' or '2GiB'."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MB or 2GiB")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower() if match.group(2) else None
        return int(float(match.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"{value!r} is not a size; expected e.g. 512MB, 2GiB or a number of bytes")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Pause = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Timeout = Annotated[float, BeforeValidator(parse_duration), Field(ge=0.05, le=60)]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]


def _number_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


# Rooms, floors and serial numbers are often written bare (room: 101); they are still text.
Text = Annotated[str, BeforeValidator(_number_as_text)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
