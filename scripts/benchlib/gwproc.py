"""The gateway under test as its own process: `.venv/bin/gateway run -c SITE --data-dir DIR`."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from benchlib.figures import ProcSampler
from benchlib.report import ROOT


def gateway_command() -> list[str]:
    """The venv's `gateway` script if there is one, else this Python's `-m gateway.cli`."""
    script = ROOT / ".venv" / "bin" / "gateway"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gateway.cli"]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the gateway's own variables (GATEWAY_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra or {})
    return env


class SampledProc:
    """A process under measurement: started in its own session with its CPU and RSS
    sampled, stopped with `stop_signal` and killed (the whole session) if it hangs."""

    stop_signal = signal.SIGTERM
    stop_timeout = 10.0

    def __init__(self, sample_every: float = 0.5) -> None:
        self.sample_every = sample_every
        self.proc: subprocess.Popen | None = None
        self.sampler: ProcSampler | None = None

    def _spawn(self, argv: list[str], log: Path, **popen: object) -> None:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, **popen)  # type: ignore[call-overload]
        self.sampler = ProcSampler(self.proc.pid, self.sample_every).start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float | None = None) -> int | None:
        if self.proc is None:
            return None
        if self.sampler is not None:
            self.sampler.mark()
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.sampler is not None:
            self.sampler.stop()
        return self.proc.returncode


class GatewayProc(SampledProc):
    def __init__(self, site: Path, data_dir: Path, *, log: Path | None = None,
                 env: dict[str, str] | None = None, sample_every: float = 0.5) -> None:
        super().__init__(sample_every)
        self.site = site
        self.data_dir = data_dir
        self.log = log or data_dir.parent / "gateway.log"
        self.env = clean_env(env)
        self.started_at = 0.0

    def start(self) -> GatewayProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = time.time()
        self._spawn([*gateway_command(), "run", "-c", str(self.site), "--data-dir",
                     str(self.data_dir), "--log-format", "json"],
                    self.log, env=self.env, cwd=str(ROOT))
        return self

    def log_tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    # --- the outbox, read-only from outside ------------------------------------------

    def outbox_state(self) -> dict[str, int] | None:
        """The highest committed seq and every cursor, or None if not readable now."""
        path = self.data_dir / "outbox.db"
        if not path.exists():
            return None
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
            try:
                row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='records'").fetchone()
                state = {"committed": row[0] if row else 0}
                state.update({f"cursor:{s}": q for s, q in db.execute("SELECT sink, seq FROM cursors")})
                return state
            finally:
                db.close()
        except sqlite3.Error:
            return None
