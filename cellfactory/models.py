"""Every model, imported once so that the metadata (and Alembic) sees the whole schema."""

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import ApiToken, PasswordHistory, RoleAssignment, User
from cellfactory.core.db import Base
from cellfactory.donors.models import Donor, ScreeningResultRecord
from cellfactory.materials.models import DinSequence, MaterialTypeRule, SourceMaterial
from cellfactory.notifications.models import Alert
from cellfactory.signatures.models import EsigAcknowledgement, IdentityVerification, Signature
from cellfactory.sites.models import Site

metadata = Base.metadata

__all__ = [
    "Alert", "ApiToken", "AuditEntry", "DinSequence", "Donor", "EsigAcknowledgement", "IdentityVerification",
    "MaterialTypeRule", "PasswordHistory", "RoleAssignment", "ScreeningResultRecord", "Signature", "Site",
    "SourceMaterial", "User", "metadata",
]
