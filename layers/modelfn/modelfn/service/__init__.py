"""The transport-neutral service: one route table, the data plane, and how a request runs."""
