"""envoi.segments."""
