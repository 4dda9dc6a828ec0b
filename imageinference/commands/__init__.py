"""The commands users type (`python -m imageinference ...`, the `imageinference` script)."""
