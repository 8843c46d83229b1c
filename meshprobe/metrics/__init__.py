"""Metrics: family names, the per-edge exposition, the instance collector and loop-lag monitor."""
