"""The dashboard: a Flask app hosted by twisted.web's WSGIResource at ``/ui/``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, render_template


def create_app(info: Callable[[], dict[str, Any]]) -> Flask:
    """The dashboard app; *info* gives the header facts (node, datacenter, counts...)."""
    app = Flask("homeport.web")

    @app.get("/")
    def index() -> str:
        return render_template("index.html", **info())

    return app
