"""Optimisation objectives: measured costs (params, FLOPs, latency, memory), constraints, Pareto
fronts, scalarisation and the latency lookup table."""
