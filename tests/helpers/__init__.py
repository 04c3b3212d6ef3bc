"""Helpers shared by the test packages (no ``test_`` module imported across files)."""
