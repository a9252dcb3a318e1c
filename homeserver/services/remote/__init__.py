"""The server's federation behaviour (the protocol itself is the pure `federation/`
library): the outbound client and sender, inbound transactions, joins through and for
other servers, backfill, state fetched from peers, EDUs, remote keys and device lists."""
