"""Fixtures of the unit layer: those in unit_helpers.py are made available to every unit test module here."""

from unit_helpers import catalog  # noqa: F401 (a fixture: the catalog the compile/export tests share)
