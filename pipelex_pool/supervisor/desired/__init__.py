"""Desired state: the request events that change it, the one function that applies them, and the reload plan."""
