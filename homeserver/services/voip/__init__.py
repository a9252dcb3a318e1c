"""Voice and video calls: what the server hands clients so that calls connect."""
