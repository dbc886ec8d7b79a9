"""Metric families of DESIGN.md ("Metrics"); each function is pure and documents its formula."""
