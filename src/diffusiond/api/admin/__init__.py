"""Admin endpoints: tenants' credits and webhook secrets."""
