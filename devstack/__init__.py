"""The development stack: local services, `windowrate up`, simulator and kiosk driver."""
