"""Talking to Temporal: connecting, describing task queues, the embedded dev server."""
