"""Montaiguillon sample site: a small WSGI news page backed by MySQL/MariaDB.

The image contract (port, environment variables, endpoints, migrations) is
documented in ``app/README.md``; the code here is its reference implementation.
"""
