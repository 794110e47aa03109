"""Attention implementations. Importing this package imports no torch; see registry.py."""
