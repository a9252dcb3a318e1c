"""Aliases, the public room list and the user directory."""
