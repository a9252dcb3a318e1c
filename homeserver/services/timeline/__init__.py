"""Reading history: /messages pages, pagination tokens, relations and threads, search,
history visibility, and the client format of events."""
