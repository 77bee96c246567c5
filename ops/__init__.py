"""The operations worker: WHK's pgqueuer jobs off the delivery hot path (alert evaluation, notifications,
outbox partitions). Depends on ``whk`` only; ``whk worker`` and ``whk dispatcher`` start it."""
