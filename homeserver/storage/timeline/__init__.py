"""Queries over a room's timeline: pages, relations and full-text search."""
