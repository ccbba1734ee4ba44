"""A deploy: the controller that carries it through Temporal, the record of what was deployed, version hygiene."""
