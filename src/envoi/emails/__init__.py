"""envoi.emails."""
