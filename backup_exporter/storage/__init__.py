"""Storage backends: where archives, per-plan run status and locks live."""
