"""The `kiosk` command: staff console, technician tools and services."""
