"""Simulated BACnet/IP plant: bacpypes3 device applications on loopback ports.

`devices.SimulatedBacnetDevice` serves one profile's objects from a model in `models`;
`SimulatedSite` starts one for every bacnet_ip device of the config.
"""
