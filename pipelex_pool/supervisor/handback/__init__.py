"""Hand-back: a dead replica's activity attempts failed at once for Temporal to retry, its cached workflow runs moved
off its sticky queue (dead_replica.py), and attempts Temporal dispatched to no live poller found and handed back
(lost_dispatch.py)."""
