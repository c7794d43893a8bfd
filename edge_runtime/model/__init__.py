"""Custom Vision exports: what they are (spec), how to read them (export), images in, predictions out."""
