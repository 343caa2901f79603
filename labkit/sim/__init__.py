"""The SimPy driver."""

from labkit.sim.driver import simulate

__all__ = ["simulate"]
