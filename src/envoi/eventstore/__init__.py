"""The event store: one wide, append-only table of every fact about every message,
projected from the OLTP outbox, that the statistics engine queries."""
