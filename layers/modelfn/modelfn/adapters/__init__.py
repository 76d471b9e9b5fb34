"""Transports: each adapter turns an event, a scope or a message into the service's request and back."""
