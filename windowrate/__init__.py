"""WindowRate windowrate."""
