"""envoi.projects."""
