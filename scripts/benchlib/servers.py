"""A pool of simulated Modbus TCP devices, served by a few child processes (modbus_server.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchlib.figures import cpu_seconds

SERVER = Path(__file__).resolve().parent / "modbus_server.py"


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 (held open together while choosing)."""
    import socket

    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class _Worker:
    proc: subprocess.Popen
    ports: list[int]

    def ask(self, cmd: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"Modbus server {self.proc.pid} exited (code {self.proc.poll()})")
        return json.loads(line)


@dataclass
class ServerPool:
    """`devices` simulated devices with `registers` registers each, `per_process` per child.

    `ports[i]` is device i's port; its registers serve `modbus_server.value(i, r)`.
    """

    devices: int
    registers: int
    impl: str = "pymodbus"
    per_process: int = 25
    python: str = sys.executable
    ports: list[int] = field(default_factory=list)
    workers: list[_Worker] = field(default_factory=list)

    def start(self) -> ServerPool:
        self.ports = free_ports(self.devices)
        for first in range(0, self.devices, self.per_process):
            ports = self.ports[first:first + self.per_process]
            proc = subprocess.Popen(
                [self.python, str(SERVER), "--impl", self.impl, "--registers", str(self.registers),
                 "--base", str(first), *map(str, ports)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                start_new_session=True,
            )
            self.workers.append(_Worker(proc, ports))
        for w in self.workers:
            line = w.proc.stdout.readline()
            if not line or not json.loads(line).get("ready"):
                self.stop()
                raise RuntimeError("a Modbus server process did not start")
        return self

    def _worker_of(self, port: int) -> _Worker:
        for w in self.workers:
            if port in w.ports:
                return w
        raise KeyError(port)

    def set(self, device: int, address: int, value: int) -> None:
        self._worker_of(self.ports[device]).ask(
            {"cmd": "set", "port": self.ports[device], "address": address, "value": value})

    def reset(self) -> None:
        for w in self.workers:
            w.ask({"cmd": "reset"})

    def stats(self) -> dict[str, object]:
        """Since the last reset: requests, polls (reads from address 0) and requests per poll
        measured between the first and the last poll start of each device; the servers'
        CPU seconds."""
        requests = polls = spanned = spanned_polls = 0
        cpu = 0.0
        for w in self.workers:
            answer = w.ask({"cmd": "stats"})
            cpu += answer["cpu"]
            for d in answer["devices"].values():
                requests += d["requests"]
                polls += d["polls"]
                if d["polls"] >= 2:
                    spanned += d["last"] - d["first"]
                    spanned_polls += d["polls"] - 1
        return {"requests": requests, "polls": polls, "cpu": cpu,
                "requests_per_poll": round(spanned / spanned_polls, 2) if spanned_polls else None}

    def cpu(self) -> float:
        total = 0.0
        for w in self.workers:
            try:
                total += cpu_seconds(w.proc.pid)
            except FileNotFoundError:
                pass
        return total

    def stop(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                try:
                    w.proc.stdin.close()
                except OSError:
                    pass
        for w in self.workers:
            try:
                w.proc.wait(5)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5)
        self.workers = []

    def __enter__(self) -> ServerPool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
