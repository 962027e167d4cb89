"""Keeping a device running for years: backups and restore, updates, the update lock."""
