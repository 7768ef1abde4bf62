"""The browser console: static files that call the public API only."""
