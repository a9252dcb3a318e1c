"""Queries of the admin API over users and rooms."""
