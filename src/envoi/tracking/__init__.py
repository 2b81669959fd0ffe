"""Tracking over HTTP: opens, clicks, web views, unsubscribes, forwards and goals, each
hit recorded durably as an outbox event with the dimensions of its send."""
