"""Receipts, presence and to-device messages."""
