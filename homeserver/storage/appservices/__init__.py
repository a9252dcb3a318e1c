"""Application services' positions and transactions."""
