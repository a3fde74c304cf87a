"""WindowRate bench."""
