"""Single sends: transactional messages (post type P) and campaign test sends (T)."""
