"""Configuration: YAML and environment → one validated Settings, errors with field paths,
durations, and the one Target factory every source of edges goes through.
"""
