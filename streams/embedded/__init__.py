"""The embedded runtime: ingress, engine and sender in one process, on one SQLite file (`anpi serve`)."""
