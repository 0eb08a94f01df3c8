"""Portero: a self-hosted MCP gateway."""

__version__ = "0.1.0"
