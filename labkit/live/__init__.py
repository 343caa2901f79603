"""The live driver: a gRPC gateway speaking AutoGen's Agent Worker Protocol, labkit's worker
processes, and a load generator, on loopback, driven by the same policy core as the simulator."""
