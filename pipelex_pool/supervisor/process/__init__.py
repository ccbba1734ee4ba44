"""One replica's life: its state machine (pure), its states and exit statuses, and the restart policy."""
