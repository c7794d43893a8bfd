"""Event sinks: each has `name`, `async publish(event)` and `async close()`."""
