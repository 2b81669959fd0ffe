"""The statistics engine: one query layer over the event store, and the statistics
surfaces of the seeds mapped onto it."""
