"""The policy core: every decision the gateway, registry and router make, with no I/O.

Nothing in this package imports SimPy or gRPC, sleeps, or reads a clock: callers pass ``now``
(seconds, float) and observations in and get decisions out. The SimPy driver (``labkit.sim``) and
the live driver both call these objects, so a decision is coded exactly once.
"""
