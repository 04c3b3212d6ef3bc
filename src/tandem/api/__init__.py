"""HTTP adapter: FastAPI app factory, schemas, error mapping. No business logic here."""

from tandem.api.app import create_app

__all__ = ["create_app"]
