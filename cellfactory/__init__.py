"""cellfactory: GMP batch and release management for a network of academic cell factories."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from pathlib import Path

from flask import Flask

from config import PROJECT_ROOT, Config

__version__ = "0.1.0"


def _build_id() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", ""})


def require_production_settings(app: Flask) -> Flask:
    """Refuse to serve production with settings only fit for one's own machine; mark the app as production."""
    from urllib.parse import urlsplit

    config: Config = app.config["CELLFACTORY"]
    if config.development or config.testing:
        return app
    host = (urlsplit(config.public_url).hostname or "").lower()
    if host in LOOPBACK_HOSTS or host.startswith("127."):
        raise RuntimeError(
            f"CELLFACTORY_PUBLIC_URL is {config.public_url!r}, a loopback address: set it to the address people "
            "reach this installation at (it is printed in the QR code of every certificate), or set "
            "CELLFACTORY_DEVELOPMENT=1 on your own machine.")
    app.config["CELLFACTORY_PRODUCTION"] = True
    return app


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    app = Flask(
        __name__,
        instance_path=str(Path(config.instance_path).resolve()),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.update(
        SECRET_KEY=config.secret_key,
        CELLFACTORY=config,
        TESTING=config.testing,
        VERSION=__version__,
        BUILD=_build_id(),
        SESSION_COOKIE_NAME="cellfactory_session",
        SESSION_COOKIE_SECURE=config.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=config.session_idle_minutes),
        REMEMBER_COOKIE_DURATION=dt.timedelta(seconds=0),
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
    )
    logging.getLogger("cellfactory").setLevel(logging.INFO)

    from cellfactory.extensions import csrf, db, login_manager

    db.init_app(app, config.database_url)
    login_manager.init_app(app)
    csrf.init_app(app)
    from cellfactory.core import i18n

    i18n.init_app(app)

    # Imported for their effect: the batch life cycle passes the readers of a batch's QC results and deviations
    # down to the batch model (cellfactory.lifecycle's docstring), and dosing its bedside check down to the
    # units' administration (cellfactory.dosing.bedside).
    import cellfactory.dosing.bedside  # noqa: F401
    import cellfactory.lifecycle  # noqa: F401
    from cellfactory import web
    from cellfactory.alerts import mail

    mail.init_app(app)
    web.register(app)

    from cellfactory.cli import register_commands

    register_commands(app)
    if config.proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client's address (kept with each session), the scheme and the host name, as the trusted proxies saw
        # them: over HTTPS the CSRF check wants the Referer on the host the browser asked for.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxies, x_proto=config.proxies,  # type: ignore[method-assign]
                                x_host=config.proxies)
    return app
