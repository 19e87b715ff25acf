"""`anpi demo`: simulated towns on either runtime."""
