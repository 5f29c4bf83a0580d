"""keyed token digests: API tokens made before are revoked

Session and API token digests become HMAC-SHA256 under the server's secret key instead of a bare SHA-256, which
anyone able to write the database could compute for a token of their own. The tokens stored before cannot be
re-keyed (only their digest is kept), so they are revoked with that reason: their users create new ones on their
account page or with `cellfactory token create`. Open browser sessions end the same way.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 00:20:00
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

REASON = 'token digests keyed with the server secret: create a new token'


def upgrade() -> None:
    now = dt.datetime.now(dt.UTC)
    stamp = cellfactory.core.db.UTCDateTime(timezone=True)
    tokens = sa.table('api_token', sa.column('revoked_at', stamp), sa.column('revoke_reason', sa.String(200)))
    op.execute(tokens.update().where(tokens.c.revoked_at.is_(None)).values(revoked_at=now, revoke_reason=REASON))
    sessions = sa.table('user_session', sa.column('ended_at', stamp), sa.column('end_reason', sa.String(40)))
    op.execute(sessions.update().where(sessions.c.ended_at.is_(None)).values(ended_at=now, end_reason='signed_out'))


def downgrade() -> None:
    # Revoked tokens stay revoked: a downgrade never brings back a token whose digest anyone could compute.
    pass
