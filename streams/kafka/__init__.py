"""The distributed runtime: the core as Faust agents over Kafka topics and changelog-backed tables."""
