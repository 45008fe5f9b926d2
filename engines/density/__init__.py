"""engines density."""
