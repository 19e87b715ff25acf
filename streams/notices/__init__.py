"""Notices (お知らせ配信): one interface (book.py), an embedded (SQLite) and a Kafka (Redis) backend, and
the delivery loop both runtimes run (delivery.py)."""
