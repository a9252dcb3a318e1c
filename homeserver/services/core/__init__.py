"""Shared machinery of every concern: stream positions, the notifier that wakes long-polls
across processes, rate limits, the delivery engine of background senders, errors and
small types."""
