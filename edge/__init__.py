"""Appliance core: domain rules, storage, services, sync, security, provisioning and the CLI."""

__version__ = "0.1.0"
