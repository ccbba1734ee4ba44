"""The supervisor: process handles and their state machine, restart policy, spawning and the reconcile loop."""
