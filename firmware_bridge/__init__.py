"""WindowRate firmware_bridge."""
