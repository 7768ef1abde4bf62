"""Pure-Python core types: no FastAPI, SQLAlchemy or torch here."""
