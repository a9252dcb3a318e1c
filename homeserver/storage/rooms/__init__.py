"""Rows of the room DAG: events and edges, state groups and current state, memberships,
rooms, invite state and reports."""
