"""conescope: the geometry of multimodal embeddings. Importable without Dagster."""

__version__ = "0.1.0"
