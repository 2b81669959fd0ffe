"""Helpers shared by the test suite, the benchmarks and demos (real servers on loopback)."""
