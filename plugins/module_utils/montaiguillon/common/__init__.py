"""Helpers every part shares: the Docker engine, files, clocks, polling."""
