"""WindowRate server."""
