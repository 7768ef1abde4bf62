"""API keys, tenants and roles, rate limiting."""
