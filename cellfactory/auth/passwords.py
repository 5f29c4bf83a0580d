"""Argon2 password hashing and the password policy."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

MAX_PASSWORD_LENGTH = 128


def _hasher() -> PasswordHasher:
    hasher = current_app.extensions.get("cellfactory.hasher")
    if hasher is None:
        cfg = current_app.config["CELLFACTORY"]
        hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1) if cfg.fast_password_hashing \
            else PasswordHasher()
        current_app.extensions["cellfactory.hasher"] = hasher
    return hasher


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def policy_problems(password: str, *, username: str, min_length: int, previous_hashes: list[str],
                    history_size: int) -> list[str]:
    """What is wrong with a proposed password, in words a user can act on (empty when fine)."""
    problems = []
    if len(password) < min_length:
        problems.append(f"Use at least {min_length} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"Use at most {MAX_PASSWORD_LENGTH} characters.")
    if username and username.lower() in password.lower():
        problems.append("Do not include your user name.")
    if password.strip() != password or not password.strip():
        problems.append("Do not start or end with spaces.")
    if len(set(password)) < 5:
        problems.append("Use more different characters.")
    if any(password_matches(old, password) for old in previous_hashes):
        problems.append(f"Do not reuse one of your last {history_size} passwords.")
    return problems
