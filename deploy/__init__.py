"""Deployment: local service processes (Mosquitto, influxd), the local stack and configs."""
