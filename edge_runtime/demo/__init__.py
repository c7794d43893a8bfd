"""The built-in demo: a small hand-made detector in Custom Vision export layout (no download needed)."""
