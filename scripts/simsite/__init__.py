"""The simulated site: pymodbus servers playing a site's devices, for the demo and the tests.

`SimulatedSite(config)` serves every device of a SiteConfig at its own host and port;
`python -m simsite --config config/site.yaml` (with scripts/ on sys.path) runs one.
"""

from simsite.dynamics import FAULTS
from simsite.server import SimulatedDevice, SimulatedSite

__all__ = ["FAULTS", "SimulatedDevice", "SimulatedSite"]
