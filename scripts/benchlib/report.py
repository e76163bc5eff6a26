"""Printing figures as a table and writing the JSON result of a scenario."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    commit = None
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": None if mem_kib is None else round(mem_kib / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value is None:
        return "-"
    return str(value)


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in cells:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


def figures(title: str, pairs: list[tuple[str, object]]) -> str:
    """A two-column table: figure, value."""
    return f"\n== {title}\n" + table(["figure", "value"], [[k, v] for k, v in pairs])


def write(scenario: str, result: dict, output: str | None) -> Path:
    if output:
        path = Path(output)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = ROOT / "bench-results" / f"{scenario}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "scenario": scenario,
        "command": " ".join(["scripts/bench", *sys.argv[1:]]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **result,
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"\nresult written to {path}")
    return path
