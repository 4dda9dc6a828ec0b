"""Scheduler names, seeds and step windows: pure logic that the sampling adapters build on."""
