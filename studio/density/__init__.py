"""studio density."""
