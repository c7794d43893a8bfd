"""Backends run a model on a device; `providers.select_provider` decides which, purely."""
