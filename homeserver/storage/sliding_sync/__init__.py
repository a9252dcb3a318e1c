"""The tables and batched reads behind simplified sliding sync (MSC4186)."""
