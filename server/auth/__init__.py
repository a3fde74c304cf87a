"""Users and roles, login sessions with CSRF protection, login rate limit and the audit log."""
