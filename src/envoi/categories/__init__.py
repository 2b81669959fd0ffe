"""envoi.categories."""
