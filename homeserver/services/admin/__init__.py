"""Synapse's admin API behaviour: listing and managing users and rooms."""
