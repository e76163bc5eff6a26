"""Commissioning: what a site engineer runs beside a new device.

`gateway probe` reads a device once (or every few seconds) with its driver and shows
each point's value, quality and the raw words as read; `gateway scan modbus` finds the
unit ids that answer on a line; `gateway tail` follows the running gateway's readings
and events (`stream.py` is its daemon side). Progress bars and live redraws use rich,
imported only by these commands (`terminal.py`), never by the daemon.
"""
