"""Reference firmware of the button board (MicroPython); importable on CPython for tests."""
