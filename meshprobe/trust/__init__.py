"""Trust: the bundle of roots, chain verdicts (and their cache), names and policy checks,
handshake recording, bundle sources with one keep-last-good policy, and our identity document.
"""
