"""Member Center Kiosk touchscreen app (Kivy): screens over view-models."""
