"""WindowRate gateway."""
