"""doudi."""
