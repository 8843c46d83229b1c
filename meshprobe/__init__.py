"""meshprobe: latency, failover and trust probing for multi-cluster service meshes."""

__version__ = "0.1.0"
