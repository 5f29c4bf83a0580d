"""Argon2 password hashing and the password policy."""

from __future__ import annotations

import gzip
import re
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

from cellfactory.core.i18n import _

MAX_PASSWORD_LENGTH = 128
# 19,640 passwords most often found in breaches (the list Django ships, BSD licence beside it).
COMMON_PASSWORDS_FILE = Path(__file__).parent / "data" / "common-passwords.txt.gz"
# Parts of a person's name shorter than this ("Di", "Li") are too common to refuse inside a password.
NAME_PART_MIN_LENGTH = 3


@cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as handle:
        return frozenset(line.strip().lower() for line in handle if line.strip())


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


def burn_password_check(password: str) -> None:
    """Spend the time of a real password check when there is no account to check against, so that a sign-in
    takes as long for an unknown user name as for a wrong password."""
    dummy = current_app.extensions.get("cellfactory.dummy_hash")
    if dummy is None:
        dummy = current_app.extensions["cellfactory.dummy_hash"] = hash_password("no account has this password")
    password_matches(dummy, password or "")


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _name_parts(full_name: str) -> list[str]:
    return [part for part in re.split(r"[\s'’.\-]+", full_name.lower()) if len(part) >= NAME_PART_MIN_LENGTH]


def policy_problems(password: str, *, username: str, min_length: int, previous_hashes: list[str],
                    history_size: int, full_name: str = "") -> list[str]:
    """What is wrong with a proposed password, in words a user can act on (empty when fine)."""
    problems = []
    if len(password) < min_length:
        problems.append(_("Use at least %(minimum)s characters.", minimum=min_length))
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(_("Use at most %(maximum)s characters.", maximum=MAX_PASSWORD_LENGTH))
    lowered = password.lower()
    if username and username.lower() in lowered:
        problems.append(_("Do not include your user name."))
    if any(part in lowered for part in _name_parts(full_name)):
        problems.append(_("Do not include your name."))
    if lowered in common_passwords():
        problems.append(_("This password is one of the most common ones: choose another."))
    if password.strip() != password or not password.strip():
        problems.append(_("Do not start or end with spaces."))
    if len(set(password)) < 5:
        problems.append(_("Use more different characters."))
    if any(password_matches(old, password) for old in previous_hashes):
        problems.append(_("Do not reuse one of your last %(count)s passwords.", count=history_size))
    return problems
