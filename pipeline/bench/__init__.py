"""Measure the machine: throughput against the hardware's limit, and parity of two ways to compute features."""
