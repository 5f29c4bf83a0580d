"""Electronic signatures (21 CFR Part 11 §11.50, §11.70, §11.100, §11.200; EU GMP Annex 11 §14).

One service for every signing step. A signature records the signer, the printed name as it was
when signed, the time, the meaning, the record's identity and version and the SHA-256 of the
canonical JSON of the exact content signed, sealed with an HMAC under a server key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from flask import current_app, g

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.auth.services import verify_password_or_count
from cellfactory.core import permissions
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.errors import AuthenticationFailed, Conflict, DomainError, PermissionDenied, ValidationFailed
from cellfactory.core.i18n import N_, _, in_language, language_of, pgettext
from cellfactory.core.transaction import lock_records, serialize_with, transactional
from cellfactory.extensions import db
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import EsigAcknowledgement, IdentityVerification, Meaning, Signature

T = TypeVar("T")
# The advisory lock that makes identity checks of the installation one at a time (PostgreSQL).
IDENTITY_CHECK_LOCK = 7_274_202
ACCOUNTABILITY_STATEMENT_VERSION = "1.0"
# Shown and signed in the signer's language (`accountability_statement`); stored as signed.
ACCOUNTABILITY_STATEMENT = N_(
    "I understand that my electronic signature in cellfactory is the legally binding equivalent of my "
    "handwritten signature. I will not share my password or let anyone sign in my name, and I am "
    "accountable for every record I sign with it."
)


def accountability_statement(user: User) -> str:
    """The accountability statement in the language the user reads: as shown to them and as stored with their
    signature (the stored text stays as it was signed)."""
    with in_language(language_of(user, g.get("site"))):
        return _(ACCOUNTABILITY_STATEMENT)


class Signable(Protocol):
    id: int
    __tablename__: str

    def signature_content(self) -> dict[str, Any]: ...


class SignatureStatus(enum.StrEnum):
    # The values are the API's (and the pages compare them); `label` is the status in the reader's language.
    VALID = "valid"
    RECORD_CHANGED = "record changed since signing: re-sign required"
    INVALID = "invalid: the signature does not belong to this record or was altered"

    @property
    def label(self) -> str:
        return {SignatureStatus.VALID: pgettext("signature status", "valid"),
                SignatureStatus.RECORD_CHANGED: pgettext("signature status",
                                                         "record changed since signing: re-sign required"),
                SignatureStatus.INVALID: pgettext("signature status", "invalid: the signature does not belong to "
                                                                      "this record or was altered")}[self]


@dataclass(frozen=True)
class SignatureCheck:
    """A signature verified against its record: the status and, when the record changed, what changed (paths into
    the signed content, e.g. ``steps[P1].passage.cells_harvested: 2000000 → 2100000``)."""

    status: SignatureStatus
    changes: list[str] = field(default_factory=list)
    # The record has progressed since signing (e.g. a pending result got its final read): the signature holds for
    # what it attested, but does not attest the content added since (which a verification must cover anew).
    progressed: bool = False

    @property
    def covers_current(self) -> bool:
        """Valid, and what it attests is the whole of the record's content now."""
        return self.status == SignatureStatus.VALID and not self.progressed

    @property
    def text(self) -> str:
        """The status as shown next to the signature, on the page and in the PDF, with what changed (the pages
        compare it with the status's value: it stays in English; `label` is the same in the reader's language)."""
        if self.status == SignatureStatus.RECORD_CHANGED and self.changes:
            return (f"{self.status.value}; changed: {'; '.join(self.changes)} (a new signature of the record as it "
                    "is now; a deviation if the change was not made through a documented correction)")
        return self.status.value

    @property
    def label(self) -> str:
        """`text` in the reader's language."""
        if self.status == SignatureStatus.RECORD_CHANGED and self.changes:
            return _("%(status)s; changed: %(changes)s (a new signature of the record as it is now; a deviation if the "
                     "change was not made through a documented correction)", status=self.status.label,
                     changes="; ".join(self.changes))
        return self.status.label


# How signed content may progress without touching what the signer attested (signatures with a snapshot):
# - a status is not content: the process changes it (a deviation closed, a batch released);
NOT_ATTESTED = frozenset({"status"})
# - an entry that awaited its result when signed (one of its values was the marker "pending", e.g. a sterility
#   result before its final read) may receive it: these values of it may be completed;
PENDING = "pending"
COMPLETED_WHEN_PENDING = frozenset({"numeric", "qualitative", "verdict", "raw_data", "analyst_id"})
# - new entries may join a list of entries (a retest, a new deviation); new keys may appear empty.
# Everything else present at signing must still be there with the same value.
# Keys added to signed content with the snapshots: hashes made before them did not include them.
ADDED_WITH_SNAPSHOTS = frozenset({"derived", "header"})


def _without_added(content: Any) -> Any:
    if isinstance(content, dict):
        return {k: _without_added(v) for k, v in content.items() if k not in ADDED_WITH_SNAPSHOTS}
    if isinstance(content, list):
        return [_without_added(v) for v in content]
    return content


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _entry_label(index: int, entry: dict[str, Any]) -> str:
    if entry.get("step"):
        return str(entry["step"])
    if entry.get("number") and "classification" in entry:
        return str(entry["number"])
    if entry.get("test"):
        return f"{index + 1} {entry['test']}"
    return str(index + 1)


def content_changes(signed: Any, current: Any, path: str = "") -> list[str]:
    """What differs between the content as signed and as it is now, under the progression rules above."""
    if isinstance(signed, dict) and isinstance(current, dict):
        pending = any(v == PENDING for k, v in signed.items() if k not in NOT_ATTESTED)
        changes: list[str] = []
        for key, before in signed.items():
            if key in NOT_ATTESTED:
                continue
            where = f"{path}.{key}" if path else key
            if key not in current:
                changes.append(f"{where}: removed")
                continue
            after = current[key]
            if pending and key in COMPLETED_WHEN_PENDING:
                continue
            changes += content_changes(before, after, where)
        for key, after in current.items():
            if key not in signed and key not in NOT_ATTESTED and not _empty(after):
                changes.append(f"{path}.{key}: added {_shown(after)}" if path else f"{key}: added {_shown(after)}")
        return changes
    if isinstance(signed, list) and isinstance(current, list):
        if not all(isinstance(item, dict) for item in signed + current):
            return [] if signed == current else [f"{path}: {_shown(signed)} → {_shown(current)}"]
        changes = []
        for index, before in enumerate(signed):
            where = f"{path}[{_entry_label(index, before)}]"
            if index >= len(current):
                changes.append(f"{where}: removed")
                continue
            changes += content_changes(before, current[index], where)
        return changes
    return [] if signed == current else [f"{path}: {_shown(signed)} → {_shown(current)}"]


def record_version(record: Any) -> int:
    version = getattr(record, "version", None)
    return version if isinstance(version, int) else record.signature_version


def content_hash(record: Signable) -> str:
    return _hash(audit.canonical_json(record.signature_content()))


def _hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


def _seal(signature: Signature) -> str:
    manifestation = {
        "signer_id": signature.signer_id,
        "signer_username": signature.signer_username,
        "printed_name": signature.printed_name,
        "meaning": signature.meaning,
        "signed_at": signature.signed_at,
        "entity_type": signature.entity_type,
        "entity_id": signature.entity_id,
        "record_version": signature.record_version,
        "content_hash": signature.content_hash,
        "comment": signature.comment,
    }
    key = current_app.config["CELLFACTORY"].signature_key.encode()
    return hmac.new(key, audit.canonical_json(manifestation).encode(), hashlib.sha256).hexdigest()


def joined(items: Sequence[str]) -> str:
    """Things to do, said as one: "a and b" in English, "a e b" in Italian."""
    text = items[0] if items else ""
    for item in items[1:]:
        text = _("%(first)s and %(second)s", first=text, second=item)
    return text


def signing_enabled(user: User) -> tuple[bool, list[str]]:
    """Whether the user may sign, and if not, what is missing."""
    accepted, checked = db.session.execute(sa.select(
        sa.exists().where(EsigAcknowledgement.user_id == user.id),
        sa.exists().where(IdentityVerification.user_id == user.id, IdentityVerification.voided_at.is_(None)))).one()
    missing = []
    if not accepted:
        missing.append(_("accept the electronic-signature accountability statement (My account)"))
    if not checked:
        missing.append(_("have an administrator record the check of your identity"))
    return (not missing, missing)


def current_identity_verification(user: User) -> IdentityVerification | None:
    return db.session.scalar(
        sa.select(IdentityVerification)
        .where(IdentityVerification.user_id == user.id, IdentityVerification.voided_at.is_(None))
        .order_by(IdentityVerification.id.desc()).limit(1)
    )


def needs_username(continuous_session: bool) -> bool:
    """First signature of a continuous session: user name and password; later ones: the password."""
    return not continuous_session


def apply_signature(
    user: User,
    record: Signable,
    *,
    meaning: Meaning,
    allowed_meanings: Collection[Meaning],
    signer: Signer,
    comment: str | None = None,
    site_id: int | None = None,
    require_signing_enabled: bool = True,
) -> Signature:
    """`user` signs `record` within the caller's transaction (the caller's service commits once), with the user
    name and password of `signer` as the door read them."""
    _authenticate(user, signer, meaning=meaning, allowed_meanings=allowed_meanings,
                  require_signing_enabled=require_signing_enabled)
    return _sign(user, record, meaning=meaning, comment=comment, site_id=site_id)


def apply_signatures(
    user: User,
    records: Sequence[tuple[Signable, int | None]],
    *,
    meaning: Meaning,
    allowed_meanings: Collection[Meaning],
    signer: Signer,
    comment: str | None = None,
) -> list[Signature]:
    """`user` signs each of `records` (each with the site its signature belongs to) in one signing ceremony,
    within the caller's transaction: authenticated once (a wrong password counts once towards lock-out), then each
    record gets its own signature with the meaning, its own content hash and its own audit entry."""
    if not records:
        raise ValidationFailed(_("Choose at least one record to sign."), fields={"records": _("Choose at least one.")})
    _authenticate(user, signer, meaning=meaning, allowed_meanings=allowed_meanings, require_signing_enabled=True)
    return [_sign(user, record, meaning=meaning, comment=comment, site_id=site_id) for record, site_id in records]


def refusals(records: Sequence[T], check: Callable[[T], None], label: Callable[[T], str], *,
             field: str) -> dict[str, str]:
    """Each record checked by the rules of its own signature (`check` raises its refusal): the refusals by
    `field[position]`, each naming its record (`label`) and why. Empty when every record may be signed."""
    return _reasons(_refused(records, check), label, field)


def _refused(records: Sequence[T], check: Callable[[T], None]) -> list[tuple[int, T, DomainError]]:
    refused: list[tuple[int, T, DomainError]] = []
    for index, record in enumerate(records):
        try:
            check(record)
        except DomainError as error:
            refused.append((index, record, error))
    return refused


def _reasons(refused: list[tuple[int, T, DomainError]], label: Callable[[T], str], field: str) -> dict[str, str]:
    return {f"{field}[{index}]": f"{label(record)}: {error.message}" for index, record, error in refused}


def refuse_unless_each_signable(records: Sequence[Any], check: Callable[[Any], None], label: Callable[[Any], str],
                                *, field: str, one: str, what: str, action: str) -> None:
    """Before a signing ceremony of many records (`one` record, `what` records, to `action` them): at least one,
    each listed once, and each checked by the rules of its own signature (`check` raises its refusal). If any is
    refused, nothing may be signed: one refusal names each refused record and why (the person signs exactly the
    list the page showed, or nothing). It is a permission refusal if any record is one the person may not sign, a
    conflict otherwise."""
    if not records:
        raise ValidationFailed(_("Choose at least one %(one)s to %(action)s.", one=one, action=action),
                               fields={field: _("Choose at least one.")})
    if len({id(record) for record in records}) != len(records):
        raise ValidationFailed(_("A %(one)s is listed twice: list each %(one)s once.", one=one),
                               fields={field: _("List each %(one)s once.", one=one)})
    lock_records(records)  # checked and signed by one ceremony at a time
    refused = _refused(records, check)
    if not refused:
        return
    kind: type[DomainError] = PermissionDenied if any(isinstance(e, PermissionDenied) for _, _, e in refused) \
        else Conflict if any(isinstance(e, Conflict) for _, _, e in refused) else ValidationFailed
    reasons = _reasons(refused, label, field)
    if len(records) > 1:
        headline = _("Nothing was signed: %(refused)s of the %(total)s %(what)s cannot be signed.",
                     refused=len(refused), total=len(records), what=what)
    else:
        headline = _("Nothing was signed: the %(what)s cannot be signed.", what=what)
    raise kind(headline + " " + " ".join(reasons.values()), fields=reasons)


def _authenticate(user: User, signer: Signer, *, meaning: Meaning, allowed_meanings: Collection[Meaning],
                  require_signing_enabled: bool) -> None:
    """The signer's identity checked for one signing ceremony (§11.200): the meaning, the user name on the first
    signature of a session, the password, and whether they may sign at all."""
    if meaning not in allowed_meanings:
        raise ValidationFailed(_("%(meaning)s is not a meaning this signature can carry.", meaning=repr(meaning.value)),
                               fields={"meaning": _("Choose one of: %(meanings)s", meanings="; ".join(
                                   m.label for m in allowed_meanings))})
    if needs_username(signer.continuous_session) and (signer.username or "").strip() != user.username:
        raise AuthenticationFailed(
            _("Enter your own user name and password to sign."),
            fields={"username": _("This is the first signature of your session: enter your user name.")},
        )
    verify_password_or_count(user, signer.password, what="signature")
    if not user.active:
        raise PermissionDenied(_("A deactivated account cannot sign."))
    if require_signing_enabled:
        enabled, missing = signing_enabled(user)
        if not enabled:
            raise PermissionDenied(_("You cannot sign yet: you must %(what)s.", what=joined(missing)))


def _sign(user: User, record: Signable, *, meaning: Meaning, comment: str | None, site_id: int | None
          ) -> Signature:
    """The signature of an authenticated signer on one record (see `_authenticate`)."""
    session = db.session
    audit.act_as(session, user)
    signed_content = audit.canonical_json(record.signature_content())
    signature = Signature(
        signer_id=user.id,
        signer_username=user.username,
        printed_name=user.full_name,
        meaning=meaning.value,
        signed_at=utcnow().replace(microsecond=0),
        entity_type=record.__tablename__,
        entity_id=str(record.id),
        record_version=record_version(record),
        content_hash=_hash(signed_content),
        signed_content=signed_content,
        comment=(comment or "").strip() or None,
        site_id=site_id,
    )
    signature.seal = _seal(signature)
    session.add(signature)
    session.flush()
    audit.anchor_at_commit(session)  # the chain's head is anchored outside the database at every signature
    return signature


def verify(signature: Signature, record: Signable) -> SignatureStatus:
    return check(signature, record).status


def check(signature: Signature, record: Signable) -> SignatureCheck:
    """The signature's seal, its record, and the content it attests against the record as it is now.

    A signature with its signed content holds while that content is still there unchanged, the record having
    progressed as the process expects (see `content_changes`); otherwise it reports what changed. A signature made
    before signed content was kept holds only while the record's content hashes as it did when signed."""
    if not hmac.compare_digest(signature.seal, _seal(signature)):
        return SignatureCheck(SignatureStatus.INVALID)
    if signature.entity_type != record.__tablename__ or signature.entity_id != str(record.id):
        return SignatureCheck(SignatureStatus.INVALID)
    current = record.signature_content()
    if signature.signed_content is None:
        if signature.content_hash != _hash(audit.canonical_json(_without_added(current))):
            return SignatureCheck(SignatureStatus.RECORD_CHANGED)
        return SignatureCheck(SignatureStatus.VALID)
    if not hmac.compare_digest(signature.content_hash, _hash(signature.signed_content)):
        return SignatureCheck(SignatureStatus.INVALID)  # the stored snapshot is not what was signed
    canonical = audit.canonical_json(current)
    if canonical == signature.signed_content:
        return SignatureCheck(SignatureStatus.VALID)
    changes = content_changes(json.loads(signature.signed_content), json.loads(canonical))
    if changes:
        return SignatureCheck(SignatureStatus.RECORD_CHANGED, changes)
    return SignatureCheck(SignatureStatus.VALID, progressed=True)


def record_of(signature: Signature) -> Any | None:
    """The record a signature is on, or None if it is gone."""
    from cellfactory.core.db import Base

    for mapper in Base.registry.mappers:
        if mapper.class_.__tablename__ == signature.entity_type:
            return db.session.get(mapper.class_, int(signature.entity_id))
    return None


def verify_all() -> dict[int, SignatureStatus]:
    """Every signature in the database checked against its record: the seal and the signed content."""
    statuses: dict[int, SignatureStatus] = {}
    for signature in db.session.scalars(sa.select(Signature).order_by(Signature.id)):
        record = record_of(signature)
        statuses[signature.id] = SignatureStatus.INVALID if record is None else verify(signature, record)
    return statuses


@dataclass(frozen=True)
class Lapse:
    """A signature of a batch's record that no longer holds, told as a deviation would open with it."""

    batch_id: int | None
    title: str
    description: str


def lapse_of(signature_id: int) -> Lapse | None:
    """What a deviation about a signature that no longer holds starts from: which signature, on which record, and
    what changed since it was signed. None when the signature holds, is not on a record of a batch, or the number
    names no signature (including one no database column can hold)."""
    if not 0 < signature_id < 2**63:
        return None
    signature = db.session.get(Signature, signature_id)
    record = record_of(signature) if signature is not None else None
    if record is None:
        return None
    found = check(signature, record)
    if found.status == SignatureStatus.VALID:
        return None
    batch_id = record.id if signature.entity_type == "batch" else getattr(record, "batch_id", None)
    signed_at = signature.signed_at.strftime("%Y-%m-%d %H:%M UTC")
    return Lapse(
        batch_id=batch_id,
        title=_("Signed record changed after signing: %(meaning)s",
                meaning=pgettext("signature meaning", signature.meaning))[:200],
        description=_("The signature \"%(meaning)s\" by %(name)s (%(username)s), %(signed_at)s, on %(entity)s "
                      "%(id)s version %(version)s, no longer holds: %(status)s. Investigate how the record changed "
                      "without a documented correction, and assess the impact on the batch.",
                      meaning=pgettext("signature meaning", signature.meaning), name=signature.printed_name,
                      username=signature.signer_username,
                      signed_at=signed_at, entity=signature.entity_type, id=signature.entity_id,
                      version=signature.record_version, status=found.label)[:8000],
    )


def signatures_for(record: Signable) -> list[Signature]:
    return list(db.session.scalars(
        sa.select(Signature).where(Signature.entity_type == record.__tablename__,
                                   Signature.entity_id == str(record.id)).order_by(Signature.signed_at, Signature.id)
    ))


class SignatureIndex:
    """The signatures of many records read in one query per record type, so a page that shows the
    signatures of every step, result or decision costs a fixed number of queries, not one per record."""

    def __init__(self, records: Collection[Signable]) -> None:
        self._by_record: dict[tuple[str, str], list[Signature]] = {}
        ids_by_type: dict[str, set[str]] = {}
        for record in records:
            ids_by_type.setdefault(record.__tablename__, set()).add(str(record.id))
        for entity_type, entity_ids in ids_by_type.items():
            for signature in db.session.scalars(
                sa.select(Signature).where(Signature.entity_type == entity_type,
                                           Signature.entity_id.in_(sorted(entity_ids)))
                .order_by(Signature.signed_at, Signature.id)
            ):
                self._by_record.setdefault((signature.entity_type, signature.entity_id), []).append(signature)

    def of(self, record: Signable) -> list[Signature]:
        """The record's signatures, oldest first, as `signatures_for` returns them."""
        return list(self._by_record.get((record.__tablename__, str(record.id)), []))


# --- prerequisites for signing -------------------------------------------------------------------


@transactional
def accept_accountability(user: User, *, signer: Signer) -> EsigAcknowledgement:
    session = db.session
    audit.act_as(session, user)
    existing = session.scalar(sa.select(EsigAcknowledgement).where(EsigAcknowledgement.user_id == user.id))
    if existing is not None:
        raise Conflict(_("You have already accepted the accountability statement."))
    acknowledgement = EsigAcknowledgement(user_id=user.id, statement_version=ACCOUNTABILITY_STATEMENT_VERSION,
                                          statement_text=accountability_statement(user), created_by_id=user.id)
    session.add(acknowledgement)
    session.flush()
    apply_signature(user, acknowledgement, meaning=Meaning.ACCOUNTABILITY, allowed_meanings={Meaning.ACCOUNTABILITY},
                    signer=signer, require_signing_enabled=False)
    return acknowledgement


def _who_made_the_signer(user: User) -> set[int]:
    """Everyone who created the user, granted one of their current roles, or asked for that grant."""
    from cellfactory.auth.models import RoleGrantRequest

    people = {user.created_by_id} | {r.created_by_id for r in user.active_roles}
    people |= set(db.session.scalars(sa.select(RoleGrantRequest.created_by_id).where(
        RoleGrantRequest.assignment_id.in_([r.id for r in user.active_roles] or [-1]))))
    return {person for person in people if person is not None}


def anyone_can_sign() -> bool:
    """Whether any active user of the installation has a current identity check: until one has, nobody can record
    an identity check with a signature that counts, so the first check is a founding one (`record_identity_check`)."""
    return db.session.scalar(
        sa.select(IdentityVerification.id).join(User, User.id == IdentityVerification.user_id)
        .where(IdentityVerification.voided_at.is_(None), User.active.is_(True)).limit(1)) is not None


@transactional
def record_identity_check(verifier: User, user: User, *, method: str, signer: Signer) -> IdentityVerification:
    """An administrator of the user's sites records how they verified the user's identity, and signs it.

    The verifier is someone who can sign (accountability accepted, own identity checked), is not the user, and did
    not create the user, grant their roles or ask for those grants. The one exception is the founding check of an
    installation where nobody can sign yet: a network administrator who has accepted the accountability statement
    records it, and the person so verified then checks the founder's identity."""
    from cellfactory.auth.services import administered_site_ids, can_manage_user

    permissions.require(verifier.has_role(Role.ADMIN), _("Only an administrator records identity checks."))
    if verifier.id == user.id:
        raise PermissionDenied(_("Another administrator must verify your identity: you cannot verify your own."))
    if not can_manage_user(verifier, user):
        raise PermissionDenied(_("You do not administer the sites of %(username)s: an administrator of their site or "
                                 "of the network checks their identity.", username=user.username))
    if verifier.id in _who_made_the_signer(user):
        raise PermissionDenied(_("You created %(username)s or granted their roles: another person checks their "
                                 "identity, so that no one person makes a signer.", username=user.username))
    # Two checks at once must not both find that nobody can sign and both count as the founding one.
    serialize_with(IDENTITY_CHECK_LOCK)
    founding = not anyone_can_sign()
    if founding:
        if administered_site_ids(verifier) is not None:
            raise PermissionDenied(_("Nobody can sign yet: the first identity check of the installation is recorded "
                                     "by a network administrator."))
        if db.session.scalar(sa.select(EsigAcknowledgement.id)
                             .where(EsigAcknowledgement.user_id == verifier.id)) is None:
            raise PermissionDenied(_("Accept the electronic-signature accountability statement (My account) before "
                                     "you record the first identity check."))
    else:
        enabled, missing = signing_enabled(verifier)
        if not enabled:
            raise PermissionDenied(_("Only someone who can sign records an identity check: you must first %(what)s.",
                                     what=joined(missing)))
    if not (method or "").strip():
        raise ValidationFailed(_("Say how the identity was checked (document type and number, in person)."),
                               fields={"method": _("Required.")})
    if current_identity_verification(user) is not None:
        raise Conflict(_("The identity of %(username)s is already verified.", username=user.username))
    session = db.session
    audit.act_as(session, verifier)
    verification = IdentityVerification(user_id=user.id, verified_by_id=verifier.id, method=method.strip(),
                                        founding=founding, created_by_id=verifier.id)
    session.add(verification)
    session.flush()
    apply_signature(verifier, verification, meaning=Meaning.IDENTITY_VERIFIED,
                    allowed_meanings={Meaning.IDENTITY_VERIFIED}, signer=signer, require_signing_enabled=False)
    return verification


@transactional
def print_accountability(user: User, tz_name: str) -> bytes:
    """The user's signed accountability statement as a PDF; the print is recorded in the audit trail."""
    from cellfactory.records import acknowledgement as pdf
    from cellfactory.records.styles import SignatureView

    acknowledgement = db.session.scalar(sa.select(EsigAcknowledgement).where(EsigAcknowledgement.user_id == user.id))
    if acknowledgement is None:
        raise Conflict(_("You have not accepted the accountability statement yet."))
    views = [SignatureView.of(s, tz_name, verify(s, acknowledgement).label) for s in signatures_for(acknowledgement)]
    config = current_app.config
    document = pdf.AcknowledgementDocument(
        full_name=user.full_name, username=user.username, statement_version=acknowledgement.statement_version,
        statement=acknowledgement.statement_text, signatures=views, version=config["VERSION"], build=config["BUILD"],
        printed=format_local(utcnow(), tz_name, seconds=True),
    )
    audit.act_as(db.session, user)
    audit.record_event(db.session, "print", entity_type="esig_acknowledgement", entity_id=acknowledgement.id,
                       entity_label=user.username, details={"document": "accountability statement PDF"})
    return pdf.render(document)
