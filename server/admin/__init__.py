"""Admin pages: registry, devices with provisioning, and users (server-rendered, JS on the APIs)."""
