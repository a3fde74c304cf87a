"""`windowrate doctor`: every check of a hall's health, each with a status, a value and a fix."""
