"""edge_runtime: run Azure Custom Vision compact exports on edge hardware."""

__version__ = "0.1.0"
