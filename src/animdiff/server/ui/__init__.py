"""The web UI served at `/`: static files of our own over the native API (see `routes`)."""

from animdiff.server.ui.routes import LAYOUT, router, ui_schema

__all__ = ["LAYOUT", "router", "ui_schema"]
