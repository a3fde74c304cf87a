"""Registry of halls, units, windows, devices, staff and service items (API and CSV import).

No authentication or roles yet: every endpoint is open to whoever reaches the server.
Users and roles (admin, office, hall manager, viewer) come in the next slice of issue 5.
"""
