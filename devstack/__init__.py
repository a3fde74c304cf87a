"""Dev stack for tests and benchmarks: Mosquitto, influxd, PostgreSQL, up, simulator, driver."""
