"""Push rules, pushers, push actions and unread counts."""
