"""The LINE edge: the webhook ingress, LINE's webhook bodies turned into engine events, and the sender."""
