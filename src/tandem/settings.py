"""Server settings, from the environment (TANDEM_*) or a .env file."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_", env_file=".env", extra="ignore")

    data_dir: Path = Path("tandem-data")
    database_url: str = ""
    service_key_file: Path | None = None
    max_body_bytes: int = 1 << 20

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'tandem.db'}"

    def resolved_key_file(self) -> Path:
        return self.service_key_file or self.data_dir / "service.key"

    def resolved_claim_file(self) -> Path:
        """Hash of the one-time claim token `tandem init` printed (never the token)."""
        return self.data_dir / "claim.json"
