"""The kiosk's Kivy touchscreen: thin screens drawing `KioskSession.view()`, forwarding touches."""
