"""envoi.sources."""
