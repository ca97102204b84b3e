"""WSGI entry point for gunicorn: ``montaiguillon_site.wsgi:application``."""

import logging

from .app import create_app

if not logging.getLogger().handlers:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")

application = create_app()
