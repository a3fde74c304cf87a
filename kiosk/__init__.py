"""WindowRate kiosk."""
