"""Dynamic batching for long-running servers: concurrent requests for one version joined into one session.run.

`batcher` (the Batcher: queues, scheduling, the worker thread), `plan` (how a version may be joined),
`rewrite` (the int8 graph rewrite that quantizes per request), `stats` (batch counts and Prometheus metrics)."""
