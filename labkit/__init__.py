"""labkit: one policy core, two drivers (SimPy simulation and live gRPC)."""

from labkit._compiled import check as _check_compiled

__version__ = "0.1.0"

_check_compiled()
