"""Live side of the server: the MQTT link, device table, live boards and device commands."""
