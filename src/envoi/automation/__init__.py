"""envoi.automation: automated campaigns fired by API events and profile changes."""
