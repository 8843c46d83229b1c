"""The HTTP listener: routes, and the security of the listener (TLS, basic auth, limits)."""
