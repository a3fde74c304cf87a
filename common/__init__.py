"""Code shared by several parts: the settings base, secrets from files, the MQTT connection."""
