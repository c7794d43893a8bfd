"""Serving models: the model service (loads, swaps, status) and the inference service (the one way in)."""
