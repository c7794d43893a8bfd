"""Cameras: one capture thread per camera feeding a latest-wins slot, sampled by the pipeline."""
