"""studio audio."""
