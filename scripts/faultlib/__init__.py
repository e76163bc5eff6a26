"""Things that misbehave on purpose, for the fault-injection tests (tests/faults).

- `tcp_proxy.TcpProxy`: a TCP relay that can cut its connections, refuse new ones, hold
  them open without relaying (a black hole), or cut one after so many bytes (mid-publish);
- `influx_front.InfluxFront`: an HTTP front for InfluxDB's write API that is down, slow,
  answers 500 or 429 with Retry-After, or refuses one line with 400, on demand;
- `modbus_device.FaultyModbusDevice`: a Modbus TCP device whose answers can be garbage,
  truncated, late, exception responses, or nothing at all;
- `serial_line.SerialLine`: a socat pty pair with pymodbus devices on one end, that can
  be pulled out (socat killed) and plugged back in;
- `tmpfs.Tmpfs`: a small tmpfs mount, a disk that fills up.

Each runs on 127.0.0.1 only. The network ones run their own event loop on a thread
(`loop.BackgroundLoop`), so a test may block while the gateway talks to them, and they
work the same beside an in-process gateway and beside a gateway in a child process.
Nothing here imports the gateway.
"""
