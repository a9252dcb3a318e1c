"""Events that are not part of the DAG: typing, read receipts, presence and to-device
messages."""
