"""State: everything the exporter and the status endpoints read, written by the scheduler and
the daemon; plain data, no I/O.
"""
