"""Finding rooms and people: aliases, the public room list, spaces' hierarchy and the user
directory."""
