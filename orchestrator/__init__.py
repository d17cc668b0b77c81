"""vrooli: bring up a whole backing stack (Postgres, Redis, Qdrant, n8n, Ollama) fast and keep it healthy."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
