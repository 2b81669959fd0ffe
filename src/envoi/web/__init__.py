"""envoi.web."""
