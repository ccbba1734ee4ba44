"""`pipelex-pool top`: the live view (model: what it shows; app: the Textual application)."""
