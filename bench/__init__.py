"""Benchmarks that print their figures, and generators of large orgs."""
