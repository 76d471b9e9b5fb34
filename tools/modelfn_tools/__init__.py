"""Tooling (CLI, publish, quantize, examples, local stack): imported lazily, never on the Lambda hot path."""
