"""roadnode: the software of a roadside traffic-enforcement camera node."""

__version__ = "0.1.0"
