"""Energy and water: consumption from counters, rollups by hour, day and month in the
site's time zone, losses per group, night-time leaks, manual and handover readings, and
the monthly ledger (docs/energy.md)."""
