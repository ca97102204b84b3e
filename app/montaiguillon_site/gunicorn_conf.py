"""Gunicorn settings: ``gunicorn -c python:montaiguillon_site.gunicorn_conf ...``.

Read from the environment (see README.md): APP_PORT, APP_WORKERS, APP_THREADS,
APP_BOOT_DELAY. An invalid value stops gunicorn before it binds the port.
Gunicorn reads every public name here as a setting (``config`` is one):
anything else must start with an underscore.
"""

import os as _os
import time as _time

from montaiguillon_site import config as _config

bind = [f"0.0.0.0:{_config.port(_os.environ)}"]
worker_class = "gthread"
workers = _config.workers(_os.environ)
threads = _config.threads(_os.environ)
# On SIGTERM, workers get this long to finish in-flight requests.
graceful_timeout = 10
timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"

_boot_delay = _config.boot_delay(_os.environ)


def on_starting(server):
    """Runs in the master before it binds the port: a delay here keeps the port closed."""
    if _boot_delay > 0:
        server.log.info("APP_BOOT_DELAY: waiting %.1f s before listening", _boot_delay)
        _time.sleep(_boot_delay)
