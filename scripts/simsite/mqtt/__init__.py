"""Simulated MQTT equipment and the broker the demo embeds.

Access controllers, emergency-call buttons, elevator IoT boxes and patrol checkpoint
readers publish to a broker rather than answer polls, so each is a paho client publishing
JSON like the real product (`access.py`, `button.py`, `elevator.py`, `patrol.py`, driven
by `device.py`). The demo must need
nothing installed, so when no broker listens where the site's MQTT devices point, the
site starts an amqtt broker there in-process (`broker.py`).

This package imports paho and amqtt only from the modules that need them, so loading the
simulator for a Modbus-only site never loads either.
"""
