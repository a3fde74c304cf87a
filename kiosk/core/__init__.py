"""The terminal core without Kivy: identity, outbox, session, setup and the Terminal wiring."""
