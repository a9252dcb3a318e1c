"""What federation keeps: the outbox of destinations, server keys, backfill gaps, servers
in rooms, remote device lists, and walks over the DAG for peers."""
