"""Every model, imported once so that the metadata (and Alembic) sees the whole schema."""

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import ApiToken, PasswordHistory, RoleAssignment, User
from cellfactory.core.db import Base
from cellfactory.notifications.models import Alert
from cellfactory.signatures.models import EsigAcknowledgement, IdentityVerification, Signature
from cellfactory.sites.models import Site

metadata = Base.metadata

__all__ = [
    "Alert", "ApiToken", "AuditEntry", "EsigAcknowledgement", "IdentityVerification", "PasswordHistory",
    "RoleAssignment", "Signature", "Site", "User", "metadata",
]
