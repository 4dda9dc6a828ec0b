"""Feature modules: each adds one request concept to the compiler and the exporter.

A module here defines `FEATURE = Feature(...)` (see registry.py) and is found by `registry.features()`; nothing
else has to list it. Modules here are pure: they know node class names (strings), never node classes.
"""
