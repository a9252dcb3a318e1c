"""Accounts and sessions: registration, login, access tokens, user-interactive auth,
devices, deactivation, profiles, account data and filters."""
