"""The fault-injection suite: each test breaks something on purpose (tests/conftest.py marks
everything here `integration`). The helpers of tests/integration (the gateway as a process,
the MQTT recorder) are shared with it."""

from __future__ import annotations

import sys
from pathlib import Path

_INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(_INTEGRATION) not in sys.path:
    sys.path.insert(0, str(_INTEGRATION))
