"""Dynamic batching for long-running servers: concurrent requests for one version joined into one session.run."""
