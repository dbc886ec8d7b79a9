"""Metric families of the warehouse (docs/storage.md, "Warehouse"); each function is pure and documents its formula."""
