"""Tandem: dual-control key ceremonies and signing for crypto-asset custody."""

__version__ = "0.1.0"
