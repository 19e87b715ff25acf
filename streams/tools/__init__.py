"""The tools around the product: benchmarks and `anpi services`."""
