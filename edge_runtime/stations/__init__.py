"""Triggered inspection: stations, part triggers, one verdict per part (see service.py)."""
