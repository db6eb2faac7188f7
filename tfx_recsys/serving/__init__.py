"""Serving the pushed model locally."""
