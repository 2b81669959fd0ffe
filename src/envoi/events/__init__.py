"""envoi.events."""
