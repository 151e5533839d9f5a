"""The web dashboard: static pages (HTML, CSS, ES modules) served by `sdq api` under `/ui`, over the JSON API."""

from .routes import router

__all__ = ["router"]
