"""The device simulator (``gb28181-sim``): real GB/T 28181 cameras and NVRs on the wire, built from our ``sip`` cores.

``SimConfig`` (``config``) describes a run, ``Simulator``/``SimDevice`` (``device``) are the devices, ``catalog``
holds what they say about themselves, ``cli`` is the command line.
"""

from .config import SimConfig
from .device import RegState, SimDevice, Simulator

__all__ = ["RegState", "SimConfig", "SimDevice", "Simulator"]
