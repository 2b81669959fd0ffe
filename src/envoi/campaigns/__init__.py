"""envoi.campaigns."""
