"""Benchmarks that set mydfs beside the machine's limits (and, later, a peer system)."""
