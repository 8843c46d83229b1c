"""The embedded demo: two simulated clusters on loopback, their PKI and an optional
Prometheus/Alertmanager stack. The daemon never imports this package.
"""
