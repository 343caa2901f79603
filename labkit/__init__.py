"""labkit: one policy core, two drivers (SimPy simulation and live gRPC)."""

__version__ = "0.1.0"
