"""ThingsBoard IoT Gateway 3.8.5 as the peer: its own virtualenv under .bench/, its config
written for the benchmark's devices, and the process started with a clean environment.

The virtualenv is `.bench/tb-venv` (git-ignored): `thingsboard-gateway==3.8.5` and
`pymodbus==3.9.2` (its Modbus connector wants exactly that version, or pip-installs it
at run time). `ensure_venv()` makes it when missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from benchlib.gwproc import SampledProc
from benchlib.report import ROOT
from benchlib.site import device_id

VENV = ROOT / ".bench" / "tb-venv"
PACKAGES = ("thingsboard-gateway==3.8.5", "pymodbus==3.9.2")
TB_VERSION = "3.8.5"


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """Create the peer's virtualenv if it is not there; return its python."""
    marker = VENV / ".bench-installed"
    if marker.exists() and marker.read_text().strip() == " ".join(PACKAGES):
        return python()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    if not python().exists():
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
    print(f"installing {' '.join(PACKAGES)} into {VENV} ...", flush=True)
    subprocess.run([str(python()), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    marker.write_text(" ".join(PACKAGES) + "\n")
    return python()


def package_dir() -> Path:
    out = subprocess.run(
        [str(python()), "-c", "import thingsboard_gateway, os; print(os.path.dirname(thingsboard_gateway.__file__))"],
        capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def general_config(broker_port: int) -> dict:
    """The shipped tb_gateway.json with the connection to our broker, remote configuration
    off, and one Modbus connector."""
    shipped = json.loads((package_dir() / "config" / "tb_gateway.json").read_text())
    tb = shipped["thingsboard"]
    tb["host"] = "127.0.0.1"
    tb["port"] = broker_port
    tb["security"] = {"type": "accessToken", "accessToken": "bench-token"}
    # A plain broker echoes the gateway's own attribute publishes back to it, which it
    # would take for remote configuration from a server (and restart its connectors):
    # off, as a site without ThingsBoard's remote configuration runs it.
    tb["remoteConfiguration"] = False
    shipped["connectors"] = [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
    return shipped


def slave(index: int, port: int, registers: int, interval_ms: int, *, wide: bool) -> dict:
    """One device as its Modbus connector's `slaves` entry.

    `wide=False`: one timeseries key per register (the usual form, what its UI writes).
    `wide=True`: one key with the "wide range" address "0-<M-1>" and maxRegistersPerRequest
    up to 125, so a poll of M <= 125 registers is one request: its fastest.
    """
    if wide:
        timeseries = [{
            "tag": "r${address}", "type": "16uint", "functionCode": 3, "objectsCount": 1,
            "address": f"0-{registers - 1}", "maxRegistersPerRequest": min(registers, 125),
        }]
    else:
        timeseries = [{"tag": f"r{i}", "type": "16uint", "functionCode": 3, "objectsCount": 1,
                       "address": i} for i in range(registers)]
    return {
        "host": "127.0.0.1", "port": port, "type": "tcp", "method": "socket", "unitId": 1,
        "deviceName": device_id(index), "deviceType": "bench",
        "timeout": 35, "byteOrder": "BIG", "wordOrder": "BIG",
        "retries": 3, "retryOnEmpty": True, "retryOnInvalid": True,
        "pollPeriod": interval_ms,
        "connectAttemptTimeMs": 5000, "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 300000,
        "attributes": [], "timeseries": timeseries,
        "attributeUpdates": [], "rpc": [],
    }


def write_config(root: Path, broker_port: int, ports: list[int], registers: int, interval_ms: int,
                 *, wide: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tb_gateway.json").write_text(json.dumps(general_config(broker_port), indent=2))
    logs = (package_dir() / "config" / "logs.json").read_text()
    (root / "logs.json").write_text(logs)
    modbus = {"master": {"slaves": [slave(i, p, registers, interval_ms, wide=wide)
                                    for i, p in enumerate(ports)]}}
    (root / "modbus.json").write_text(json.dumps(modbus, indent=2))
    return root


class TbProc(SampledProc):
    """The peer's process; stopped with SIGINT (its own handler), killed if it hangs."""

    stop_signal = signal.SIGINT
    stop_timeout = 15.0

    def __init__(self, config_dir: Path, workdir: Path, sample_every: float = 0.5) -> None:
        super().__init__(sample_every)
        self.config_dir = config_dir
        self.workdir = workdir
        self.log = workdir / "tb.stdout.log"

    def start(self) -> TbProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        # A clean environment: it reads host, port, username... into its config.
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.workdir), "LANG": "C.UTF-8",
               "TB_GW_CONFIG_DIR": str(self.config_dir) + os.sep,
               "TB_GW_LOGS_PATH": str(self.workdir / "logs")}
        self._spawn([str(python()), "-c",
                     "from thingsboard_gateway.tb_gateway import daemon; daemon()"],
                    self.log, cwd=self.workdir, env=env)
        return self

    def log_tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
