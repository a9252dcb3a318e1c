"""The batched queries behind /sync."""
