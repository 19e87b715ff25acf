"""A tenant's outgoing webhook (agents/hooks.py): the queue of deliveries, one store per runtime, and
the loop that posts them."""
