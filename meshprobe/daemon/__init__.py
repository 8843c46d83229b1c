"""The daemon: wiring and lifecycle, the per-target scheduler, logging set-up."""
