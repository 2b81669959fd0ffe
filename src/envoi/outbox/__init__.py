"""envoi.outbox."""
