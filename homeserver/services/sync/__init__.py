"""/sync: which rooms a sync covers, their timelines and state, and the sync token."""
