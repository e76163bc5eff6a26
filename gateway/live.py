"""A live view of the latest values, for the demo and for commissioning at the console."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime

from gateway.batch import Quality
from gateway.catalog import Catalog
from gateway.pipeline import Pipeline
from gateway.textable import format_table


def render(pipeline: Pipeline, catalog: Catalog, now: float | None = None) -> str:
    """One table of every device's latest batch: value with unit, quality, age."""
    now = now or time.time()
    rows = []
    for device, points in sorted(pipeline.current().items()):
        info = catalog.device(device)
        for point, (value, quality, ts) in points.items():
            shown = _format_value(value) if quality == Quality.GOOD else ""
            if quality == Quality.GOOD and point in info.enums:
                shown = f"{shown} {info.enums[point].get(value, '')}".strip()
            unit = info.units.get(point, "")
            rows.append((
                device, point, info.point_names.get(point, ""),
                f"{shown} {unit}".strip(), quality, f"{now - ts:.0f}s",
            ))
    header = f"{catalog.site_name} — {datetime.now().strftime('%H:%M:%S')}"
    table = format_table(("device", "point", "name", "value", "quality", "age"), rows)
    return f"{header}\n{table}\n"


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


async def show_forever(pipeline: Pipeline, catalog: Catalog, every: float = 2.0) -> None:
    """Redraw in place on a terminal; append snapshots otherwise (e.g. piped to a file)."""
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    while True:
        await asyncio.sleep(every)
        sys.stdout.write(clear + render(pipeline, catalog))
        sys.stdout.flush()
