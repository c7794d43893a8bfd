"""HTTP API: the Custom Vision container's routes, plus health and metrics."""
