"""engines audio."""
