"""Rooms as the DAG of signed events: the writer that authorises and persists local events,
room creation, membership, sending, state, upgrades, reports and server ACLs."""
