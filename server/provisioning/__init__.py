"""Broker accounts, their ACL files, and one-time provisioning codes for kiosks."""
