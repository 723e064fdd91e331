"""dockercc."""
