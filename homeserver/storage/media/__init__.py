"""Media metadata, the content-addressed files, and the URL preview cache."""
