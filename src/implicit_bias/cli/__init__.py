"""Command-line interface (``implicit-bias``)."""

from .app import app


def main() -> None:
    """Entry point of the ``implicit-bias`` console script."""
    app()


__all__ = ["app", "main"]
