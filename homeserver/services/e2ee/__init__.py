"""End-to-end encryption support: device and one-time keys, cross-signing, device list
changes and key backup."""
