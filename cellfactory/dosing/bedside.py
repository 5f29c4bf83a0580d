"""Importing this module passes the dosing check of the bedside down to `units.services.administer`
(`ADMINISTRATION_CHECKS`), as `cellfactory.lifecycle` passes its readers down; `create_app` imports it."""

from __future__ import annotations

from cellfactory.dosing.services import check_administration
from cellfactory.units.services import ADMINISTRATION_CHECKS

if check_administration not in ADMINISTRATION_CHECKS:
    ADMINISTRATION_CHECKS.append(check_administration)
