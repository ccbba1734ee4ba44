"""Tasks beside the reconcile loop that only look: a child's output, notifications and exit; Temporal's queues and
reachability; process resources. They report events or request events; the loop decides."""
