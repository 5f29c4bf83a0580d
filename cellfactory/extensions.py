"""Extension objects, created unbound and initialised in the app factory."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from cellfactory.core.db import create_engine

_EXTENSION_KEY = "cellfactory.db"


class AppDatabase:
    """The engine and request-scoped session of one app instance."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.engine = create_engine(url, **engine_kwargs)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False, autoflush=True)
        self.session: scoped_session[Session] = scoped_session(self.session_factory)


class Database:
    """Plain SQLAlchemy 2 rather than an ORM wrapper, so that the test suite can bind the session
    factory to an outer transaction (SQLAlchemy's "joining a session into an external transaction").
    Each app keeps its own engine; `db.session` is the current app's session.
    """

    def init_app(self, app: Flask, url: str, **engine_kwargs: Any) -> AppDatabase:
        state = AppDatabase(url, **engine_kwargs)
        app.extensions[_EXTENSION_KEY] = state
        app.teardown_appcontext(lambda exc: state.session.remove())
        return state

    @staticmethod
    def state(app: Flask | None = None) -> AppDatabase:
        return (app or current_app).extensions[_EXTENSION_KEY]

    @property
    def session(self) -> scoped_session[Session]:
        return self.state().session

    @property
    def engine(self) -> sa.Engine:
        return self.state().engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


db = Database()
login_manager = LoginManager()
csrf = CSRFProtect()
