"""Runtimes around the pure core: the virtual-time simulator now; the Kafka and embedded runtimes later."""
