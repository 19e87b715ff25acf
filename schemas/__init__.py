"""Plain records that cross the engine's boundary: settings, events in, effects out.

Time everywhere is an integer: milliseconds since the Unix epoch (as LINE stamps its webhooks).
"""
