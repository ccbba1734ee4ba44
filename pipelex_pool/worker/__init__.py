"""The child process: one Temporal worker on one task queue, with one scope and one runtime profile."""
