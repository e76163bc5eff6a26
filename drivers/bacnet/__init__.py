"""BACnet/IP driver: one shared bacpypes3 network, per-device read plans, COV and writes.

`network` owns the gateway's BACnet presence (one UDP port, BBMD registration),
`plan` compiles points into reads and packs them by APDU size, `values` converts
answers into readings and quality, `cov` keeps subscriptions alive, and `driver` runs
it all for one device.
"""

from drivers.bacnet.driver import BacnetDriver
from drivers.bacnet.network import BacnetNetwork, device_address

__all__ = ["BacnetDriver", "BacnetNetwork", "device_address"]
