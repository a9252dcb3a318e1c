"""Rows of single sign-on: accounts linked to providers' subjects, logins in flight,
first logins waiting for a username."""
