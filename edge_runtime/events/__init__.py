"""Predictions -> defect events (rules), snapshots, and fan-out to sinks."""
