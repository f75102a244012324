"""The Flask application: health, status and metrics routes."""

from exporter.web.app import create_app

__all__ = ["create_app"]
