"""The books tests run on a real anvil node (the chain access tests' fixtures) and on
SQLite and PostgreSQL (the shared ``db`` fixture)."""

from tests.chainio.conftest import anvil, token, token_bytecode

__all__ = ["anvil", "token", "token_bytecode"]
