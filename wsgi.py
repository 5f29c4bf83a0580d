"""WSGI entry point: `gunicorn wsgi:app` or `flask --app wsgi ...`.

What a WSGI server loads is production unless CELLFACTORY_DEVELOPMENT=1: it refuses to start with a loopback
public URL (certificates would print a QR code nobody can reach) and always sends HSTS.
"""

import gc

from cellfactory import create_app, require_production_settings

app = require_production_settings(create_app())
# What start-up made (modules, the app, its routes and templates) lives as long as the worker: kept out of the
# garbage collector's passes, each full collection during a request has far less to walk.
gc.freeze()
