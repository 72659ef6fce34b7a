"""Optimal transport with dual certificates."""
