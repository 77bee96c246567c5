"""WHK dispatcher: turns outbox events into signed, retried, ordered HTTP deliveries."""
