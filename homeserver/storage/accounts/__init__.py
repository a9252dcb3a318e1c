"""Rows of accounts and sessions: users, access tokens, devices, UIA sessions, registration
tokens, profiles, account data and filters."""
