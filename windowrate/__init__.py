"""WindowRate: the `windowrate` command."""
