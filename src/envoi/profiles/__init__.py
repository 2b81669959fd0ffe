"""envoi.profiles."""
