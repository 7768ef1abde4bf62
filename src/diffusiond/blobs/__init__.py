"""Object storage behind one interface (local folder, S3) and signed expiring URLs."""
