"""Simplified sliding sync (MSC4186): windows over a user's room list, sorted by
recency, with per-connection state so each answer holds only what changed."""
