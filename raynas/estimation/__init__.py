"""Performance estimation: how a candidate architecture is scored (full or partial training)."""
