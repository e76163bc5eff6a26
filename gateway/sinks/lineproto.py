"""Batches → InfluxDB line protocol, the hot path of the InfluxDB sink.

Every line of one device point starts with the same measurement and tag set, so that
prefix is escaped and joined once per (device, point) and cached; a batch then costs
one f-string per point. A batch of plain finite numbers and bools with good quality (the
usual poll) takes one list comprehension over the heads cached for its point set. Tags are
sorted by key, which InfluxDB recommends for speed.

Line shape (precision ms)::

    readings,building=A,device=pump1,point=p_out,site=s1,unit=MPa value=0.42 1700000000000
    readings,device=pump1,point=p_out,site=s1 quality="comm_failure" 1700000000000

Numbers and bools go to the float field `value` (bool as 1.0/0.0; one field type per
series, or InfluxDB refuses the write), strings to the string field `text`. A point
whose quality is not good gets the string field `quality` and no value. A float that
is NaN or infinite cannot be written in line protocol; it is written as quality
`out_of_range`, like any other value that cannot be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from gateway.batch import Batch, Kind, Quality, Record, number_kinds
from gateway.catalog import Catalog

# Per the line protocol reference: measurement escapes comma and space; tag keys, tag
# values and field keys also escape the equals sign. Control characters would end the
# line, so they are escaped the way influxdb-client's Point does it.
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"}
)
# String field values: only the double quote and the backslash are special.
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})

_OUT_OF_RANGE = f' quality="{Quality.OUT_OF_RANGE}"'


def escape_measurement(name: str) -> str:
    return name.translate(_ESCAPE_MEASUREMENT)


def escape_key(key: str) -> str:
    """Escape a tag key, tag value or field key."""
    escaped = key.translate(_ESCAPE_KEY)
    # A trailing backslash would escape the separator after it.
    return escaped + " " if escaped.endswith("\\") else escaped


def escape_string(value: str) -> str:
    """Escape a string field value (without the surrounding quotes)."""
    return value.translate(_ESCAPE_STRING)


def timestamp_ms(ts: float) -> int:
    return round(ts * 1000)


_HEADS_MAX = 10_000  # point sets kept with their heads (a site has a few hundred)


class LineEncoder:
    """Turns reading records into line protocol, caching each point's escaped prefix.

    `unit_as` is "tag" (unit is part of the series key) or "field" (a string field
    `unit` beside `value`, so changing a unit in the profile does not start a new series).
    """

    def __init__(
        self, catalog: Catalog, measurement: str = "readings", unit_as: str = "tag"
    ) -> None:
        if unit_as not in ("tag", "field"):
            raise ValueError(f"unit_as must be 'tag' or 'field', not {unit_as!r}")
        self.catalog = catalog
        self.measurement = escape_measurement(measurement)
        self.unit_as = unit_as
        # device -> point -> (prefix, suffix after the value field)
        self._cache: dict[str, dict[str, tuple[str, str]]] = {}
        # (device, points) -> "<prefix> value=" and "<suffix> " of each point, in order
        self._heads: dict[tuple[str, tuple[str, ...]], tuple[list[str], list[str]]] = {}

    def encode(self, records: Iterable[Record]) -> list[str]:
        """Lines for every reading in `records`, in order; events are not written."""
        lines: list[str] = []
        for record in records:
            if record.kind == Kind.READING:
                self.encode_batch(record.item, lines)  # type: ignore[arg-type]
        return lines

    def encode_batch(self, batch: Batch, out: list[str]) -> None:
        """Append one line per point of `batch` to `out`."""
        kinds = number_kinds(batch)
        if kinds is not None:
            heads, tails = self._heads_of(batch.device, batch.points)
            ts = timestamp_ms(batch.ts)
            values = batch.values
            if bool in kinds:  # written as 1.0 / 0.0, like any number
                values = [float(v) if type(v) is bool else v for v in values]
            # repr of an int is its digits, of a float the shortest exact form
            out += [
                f"{head}{value!r}{tail}{ts}"
                for head, value, tail in zip(heads, values, tails, strict=True)
            ]
            return
        series = self._cache.get(batch.device)
        if series is None:
            series = self._cache[batch.device] = {}
        ts = timestamp_ms(batch.ts)
        qualities = batch.quality
        values = batch.values
        for i, point in enumerate(batch.points):
            entry = series.get(point)
            if entry is None:
                entry = series[point] = self._series(batch.device, point)
            prefix, suffix = entry
            quality = Quality.GOOD if qualities is None else qualities[i]
            if quality != Quality.GOOD:
                out.append(f'{prefix} quality="{escape_string(str(quality))}" {ts}')
                continue
            value = values[i]
            kind = type(value)
            if kind is float:
                if math.isfinite(value):
                    out.append(f"{prefix} value={value!r}{suffix} {ts}")
                else:
                    out.append(f"{prefix}{_OUT_OF_RANGE} {ts}")
            elif kind is int:
                out.append(f"{prefix} value={value}{suffix} {ts}")
            elif kind is bool:
                out.append(f"{prefix} value={'1.0' if value else '0.0'}{suffix} {ts}")
            elif kind is str:
                out.append(f'{prefix} text="{escape_string(value)}"{suffix} {ts}')
            elif value is None:
                continue  # a good point without a value carries nothing to write
            elif isinstance(value, int | float):  # int and float subclasses, e.g. numpy
                number = float(value)
                if math.isfinite(number):
                    out.append(f"{prefix} value={number!r}{suffix} {ts}")
                else:
                    out.append(f"{prefix}{_OUT_OF_RANGE} {ts}")
            else:
                out.append(f'{prefix} text="{escape_string(str(value))}"{suffix} {ts}')

    def _heads_of(self, device: str, points: tuple[str, ...]) -> tuple[list[str], list[str]]:
        key = (device, points)
        entry = self._heads.get(key)
        if entry is None:
            if len(self._heads) >= _HEADS_MAX:  # point sets that come and go (derived points)
                self._heads.clear()
            series = self._cache.setdefault(device, {})
            heads, tails = [], []
            for point in points:
                prefix, suffix = series.get(point) or series.setdefault(
                    point, self._series(device, point)
                )
                heads.append(f"{prefix} value=")
                tails.append(f"{suffix} ")
            entry = self._heads[key] = (heads, tails)
        return entry

    def origin(self, line: str) -> tuple[str, str] | None:
        """(device, point) a line was made for; used only to name a line InfluxDB refused."""
        for device, series in self._cache.items():
            for point, (prefix, _) in series.items():
                if line.startswith(prefix + " "):
                    return device, point
        return None

    def _series(self, device: str, point: str) -> tuple[str, str]:
        info = self.catalog.device(device)
        tags = {k: v for k, v in info.tags.items() if v}
        tags["point"] = point
        unit = info.units.get(point)
        suffix = ""
        if unit:
            if self.unit_as == "tag":
                tags["unit"] = unit
            else:
                suffix = f',unit="{escape_string(unit)}"'
        tag_text = ",".join(f"{escape_key(k)}={escape_key(str(tags[k]))}" for k in sorted(tags))
        return f"{self.measurement},{tag_text}", suffix
