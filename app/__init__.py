"""taskqueue: a distributed task queue service on Dramatiq and Redis."""
