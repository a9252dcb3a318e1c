"""Device keys, one-time and fallback keys, cross-signing keys, device list changes and key
backups."""
