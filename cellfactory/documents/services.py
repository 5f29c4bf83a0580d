"""Controlled documents and change control: SOP versions drafted by site staff and made effective by QA with an
electronic signature (never by their author), superseding the one before; change requests numbered per site and
year, submitted with their impact, approved by QA (and by the QP when released products are affected), followed
through their actions to closure. Nothing is deleted."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions
from cellfactory.core.clock import local_today, utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import N_, _
from cellfactory.core.numbering import next_number
from cellfactory.core.scoping import get_visible, visible_to
from cellfactory.core.transaction import lock_records, transactional
from cellfactory.documents.commands import (
    AddChangeAction,
    CiteChangeRequest,
    CloseChangeRequest,
    CompleteChangeAction,
    CreateSop,
    NewSopVersion,
    OpenChangeRequest,
    RejectChangeRequest,
    SubmitChangeRequest,
    WithdrawVersion,
    pdf_problem,
)
from cellfactory.documents.models import (
    ChangeAction,
    ChangeRequest,
    ChangeRequestSequence,
    ChangeStatus,
    Sop,
    SopVersion,
    SopVersionStatus,
)
from cellfactory.extensions import db
from cellfactory.products.models import Product, SpecificationVersion, SpecStatus
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site

AUTHOR_CANNOT_APPROVE = N_("You wrote this version: another QA person must approve it.")


# --- reading -------------------------------------------------------------------------------------------------


def visible_sops(user: User, code: str, site: Site | None = None) -> list[Sop]:
    query = visible_to(sa.select(Sop).where(Sop.code == (code or "").strip().upper()), Sop, user)
    if site is not None:
        query = query.where(Sop.site_id == site.id)
    return list(db.session.scalars(query.order_by(Sop.site_id)))


def get_sop(user: User, site: Site, code: str) -> Sop:
    found = visible_sops(user, code, site)
    if not found:
        raise NotFound(_("There is no SOP %(code)s you can see at %(site)s.", code=repr(code), site=site.code))
    return found[0]


def get_change_request(user: User, number: str) -> ChangeRequest:
    return get_visible(ChangeRequest, user, ChangeRequest.number == (number or "").strip().upper(),
                       what=_("change request %(number)s", number=repr(number)))


def version_of(sop: Sop, number: int) -> SopVersion:
    version = next((v for v in sop.versions if v.number == number), None)
    if version is None:
        raise NotFound(_("%(code)s has no version %(number)s.", code=sop.code, number=number))
    return version


def pdf_of(version: SopVersion) -> bytes:
    return version.pdf


# --- SOPs and their versions ---------------------------------------------------------------------------------


def _require_staff(actor: User, site_id: int) -> None:
    permissions.require(actor.has_any_role(permissions.SITE_STAFF, site_id),
                        _("Only the staff of the site write its SOPs and change requests."))


def _require_qa(actor: User, site_id: int, message: str | None = None) -> None:
    permissions.require(actor.has_role(Role.QA, site_id),
                        message or _("Only QA of the site approves documents and changes."))


def _version_fields(actor: User, site: Site, command: NewSopVersion, errors: dict[str, str]) -> dict:
    """The columns of a new version from the command, with the rules that tie them to the site and its records."""
    problem = pdf_problem(command.pdf)
    if problem:
        errors["pdf"] = problem
    if command.effective_on < local_today(site.timezone):
        errors["effective_on"] = _("The effective date is in the past: today or later.")
    change = None
    if command.change_request:
        change = db.session.scalar(sa.select(ChangeRequest).where(
            ChangeRequest.site_id == site.id, ChangeRequest.number == command.change_request.upper()))
        if change is None:
            errors["change_request"] = _("There is no change request with this number at this site.")
        elif change.status not in (ChangeStatus.APPROVED, ChangeStatus.CLOSED, ChangeStatus.SUBMITTED):
            errors["change_request"] = _("The change request is %(status)s: cite a submitted or approved one.",
                                         status=change.status.label)
    return {"effective_on": command.effective_on, "change_summary": command.change_summary or "",
            "pdf": command.pdf, "pdf_sha256": hashlib.sha256(command.pdf).hexdigest(), "pdf_size": len(command.pdf),
            "filename": command.filename or "", "change_request": change, "author_id": actor.id,
            "created_by_id": actor.id, "site_id": site.id, "status": SopVersionStatus.DRAFT}


# The states in which a change request may be cited by the version it introduces: submitted (the version is drafted
# while QA and the QP assess the change), approved, or closed once its actions are done.
CITABLE = (ChangeStatus.SUBMITTED, ChangeStatus.APPROVED, ChangeStatus.CLOSED)


@transactional
def cite_in_specification(actor: User, spec: SpecificationVersion, command: CiteChangeRequest) -> SpecificationVersion:
    """QA cites, on a draft specification version, the change request that introduces it (EU GMP ch. 1.4(xii)): one
    QA may see, submitted, approved or closed, naming the version's product. The citation is signed with the
    version when it is approved; an approved version's citation never changes."""
    permissions.require(actor.has_role(Role.QA), _("Only QA cites the change request of a specification version."))
    lock_records([spec])
    if spec.status != SpecStatus.DRAFT:
        raise Conflict(_("%(specification)s is approved: its change request can no longer change.",
                         specification=spec.label))
    number = command.change_request.strip().upper()
    change = db.session.scalar(visible_to(sa.select(ChangeRequest).where(ChangeRequest.number == number),
                                          ChangeRequest, actor))
    if change is None:
        problem = _("No change request you can see has this number.")
    elif change.status not in CITABLE:
        problem = _("The change request is %(status)s: cite a submitted or approved one.", status=change.status.label)
    elif spec.product_id not in {product.id for product in change.products}:
        problem = _("%(number)s does not name %(product)s among the products it changes: add the product to its "
                    "impact assessment first.", number=change.number, product=spec.product.code)
    else:
        problem = None
    if problem:
        raise ValidationFailed(f"{_(CiteChangeRequest.refusal)}: {problem}", fields={"change_request": problem})
    audit.act_as(db.session, actor, reason=f"cites change request {change.number}")
    spec.change_request_id, spec.change_request_number = change.id, change.number
    db.session.flush()
    return spec


def citing_specifications(change: ChangeRequest) -> list[SpecificationVersion]:
    """The specification versions that cite the change request, in the order drafted."""
    return list(db.session.scalars(sa.select(SpecificationVersion).where(
        SpecificationVersion.change_request_id == change.id).order_by(SpecificationVersion.id)))


def _refuse(refusal: str, errors: dict[str, str]) -> None:
    if errors:
        raise ValidationFailed(f"{refusal}: " + " ".join(dict.fromkeys(errors.values())), fields=errors)


@transactional
def create_sop(actor: User, site: Site, command: CreateSop) -> Sop:
    """Register an SOP at the site with its first version, a draft (staff of the site)."""
    _require_staff(actor, site.id)
    errors: dict[str, str] = {}
    if db.session.scalar(sa.select(Sop.id).where(Sop.site_id == site.id, Sop.code == command.code)):
        errors["code"] = _("%(site)s already has an SOP with this code.", site=site.code)
    fields = _version_fields(actor, site, command, errors)
    _refuse(str(CreateSop.refusal), errors)
    audit.act_as(db.session, actor)
    sop = Sop(site_id=site.id, code=command.code, title=command.title, created_by_id=actor.id)
    db.session.add(sop)
    db.session.flush()
    db.session.add(SopVersion(sop=sop, number=1, **fields))
    db.session.flush()
    db.session.refresh(sop, ["versions"])
    return sop


@transactional
def add_version(actor: User, sop: Sop, command: NewSopVersion) -> SopVersion:
    """A new draft version of the SOP (staff of the site); one draft at a time."""
    _require_staff(actor, sop.site_id)
    # Two new versions at once: the second waits here, then finds the first's draft.
    lock_records([sop])
    db.session.refresh(sop, ["versions"])
    if sop.draft is not None:
        raise Conflict(_("%(code)s already has a draft (version %(number)s): approve or withdraw it first.",
                         code=sop.code, number=sop.draft.number))
    errors: dict[str, str] = {}
    fields = _version_fields(actor, sop.site, command, errors)
    _refuse(str(NewSopVersion.refusal), errors)
    audit.act_as(db.session, actor)
    number = max((v.number for v in sop.versions), default=0) + 1
    version = SopVersion(sop=sop, number=number, **fields)
    db.session.add(version)
    db.session.flush()
    return version


@transactional
def approve_version(actor: User, version: SopVersion, *, signer: Signer) -> SopVersion:
    """QA of the site approves a draft with an electronic signature: it becomes effective and the version effective
    until now is superseded (kept, readable, marked). Its author may not approve it."""
    _require_qa(actor, version.site_id)
    # Two approvals at once: the second waits here, then reads the status the first left.
    lock_records([version.sop])
    db.session.refresh(version)
    if version.status != SopVersionStatus.DRAFT:
        raise Conflict(_("%(code)s v%(number)s is %(status)s, not a draft.", code=version.sop.code,
                         number=version.number, status=version.status.label))
    if actor.id in {version.author_id, version.created_by_id}:
        raise Conflict(_(AUTHOR_CANNOT_APPROVE), fields={"meaning": _(AUTHOR_CANNOT_APPROVE)})
    audit.act_as(db.session, actor, reason="SOP version approved")
    signatures.apply_signature(actor, version, meaning=Meaning.APPROVED, allowed_meanings={Meaning.APPROVED},
                               site_id=version.site_id, signer=signer)
    now = utcnow()
    for earlier in version.sop.versions:
        if earlier.status == SopVersionStatus.EFFECTIVE and earlier.id != version.id:
            earlier.status = SopVersionStatus.SUPERSEDED
            earlier.superseded_at = now
    version.status = SopVersionStatus.EFFECTIVE
    version.approved_at = now
    version.approved_by_id = actor.id
    return version


@transactional
def withdraw_version(actor: User, version: SopVersion, command: WithdrawVersion) -> SopVersion:
    """A draft is withdrawn with a reason (its author or QA of the site); it is kept, never deleted."""
    if actor.id != version.author_id:
        _require_qa(actor, version.site_id, _("Only the author or QA of the site withdraws a draft."))
    if version.status != SopVersionStatus.DRAFT:
        raise Conflict(_("%(code)s v%(number)s is %(status)s: only a draft is withdrawn.", code=version.sop.code,
                         number=version.number, status=version.status.label))
    audit.act_as(db.session, actor, reason=command.reason)
    version.status = SopVersionStatus.WITHDRAWN
    version.withdrawn_at = utcnow()
    version.withdrawn_by_id = actor.id
    version.withdraw_reason = command.reason
    return version


# --- change requests -----------------------------------------------------------------------------------------


def _next_number(site: Site) -> str:
    year = local_today(site.timezone).year
    value = next_number(ChangeRequestSequence, site_id=site.id, year=year)
    return f"CR-{site.code}-{year}-{value:04d}"


def _products(codes: Iterable[str], errors: dict[str, str]) -> list[Product]:
    wanted = list(dict.fromkeys(c.strip().upper() for c in codes))
    if not wanted:
        return []
    found = list(db.session.scalars(sa.select(Product).where(Product.code.in_(wanted)).order_by(Product.code)))
    unknown = sorted(set(wanted) - {p.code for p in found})
    if unknown:
        errors["products"] = _("No product has the code %(codes)s.", codes=", ".join(unknown))
    return found


@transactional
def open_change_request(actor: User, site: Site, command: OpenChangeRequest) -> ChangeRequest:
    """A change request in draft, numbered per site and year (staff of the site)."""
    _require_staff(actor, site.id)
    errors: dict[str, str] = {}
    products = _products(command.products or [], errors)
    _refuse(str(OpenChangeRequest.refusal), errors)
    audit.act_as(db.session, actor)
    change = ChangeRequest(number=_next_number(site), site_id=site.id, title=command.title,
                           description=command.description, reason=command.reason,
                           impact_assessment=command.impact_assessment or "", status=ChangeStatus.DRAFT,
                           requested_by_id=actor.id, created_by_id=actor.id, products=products)
    db.session.add(change)
    db.session.flush()
    return change


@transactional
def submit_change_request(actor: User, change: ChangeRequest, command: SubmitChangeRequest) -> ChangeRequest:
    """Its requester or QA submits a draft with its impact assessment, saying whether it affects released products
    (then the QP approves it as well as QA)."""
    if actor.id != change.requested_by_id:
        _require_qa(actor, change.site_id, _("Only the requester or QA of the site submits a change request."))
    if change.status != ChangeStatus.DRAFT:
        raise Conflict(_("%(number)s is %(status)s: only a draft is submitted.", number=change.number,
                         status=change.status.label))
    impact = command.impact_assessment if command.impact_assessment is not None else change.impact_assessment
    if not impact:
        raise ValidationFailed(_("The change request cannot be submitted: assess its impact first."),
                               fields={"impact_assessment": _("Assess the impact on products, batches in progress "
                                                              "and validations.")})
    audit.act_as(db.session, actor, reason="change request submitted")
    change.impact_assessment = impact
    change.affects_released_products = command.affects_released_products
    change.status = ChangeStatus.SUBMITTED
    change.submitted_at = utcnow()
    return change


def approvals_missing(change: ChangeRequest) -> list[str]:
    """The approvals a submitted change still needs: QA's always, the QP's when it affects released products."""
    missing = []
    if change.qa_approved_at is None:
        missing.append(_("QA"))
    if change.needs_qp and change.qp_approved_at is None:
        missing.append(_("the QP"))
    return missing


@transactional
def approve_change_request(actor: User, change: ChangeRequest, role: Role, *, signer: Signer) -> ChangeRequest:
    """QA, or the QP when the change affects released products, approves a submitted change with an electronic
    signature; it is approved once every approval it needs is signed."""
    if role not in (Role.QA, Role.QP):
        raise ValidationFailed(_("A change is approved by QA or by the QP."), fields={"role": _("QA or QP.")})
    permissions.require(actor.has_role(role, change.site_id),
                        _("Only QA of the site approves as QA.") if role == Role.QA
                        else _("Only a QP of the site approves as QP."))
    if change.status != ChangeStatus.SUBMITTED:
        raise Conflict(_("%(number)s is %(status)s: only a submitted change is approved.", number=change.number,
                         status=change.status.label))
    if role == Role.QP and not change.needs_qp:
        raise Conflict(_("%(number)s does not affect released products: QA's approval is the one it needs.",
                         number=change.number))
    if (change.qa_approved_by_id if role == Role.QA else change.qp_approved_by_id) is not None:
        raise Conflict(_("%(number)s is already approved by this role.", number=change.number))
    if actor.id in {change.qa_approved_by_id, change.qp_approved_by_id}:
        raise Conflict(_("You approved this change already: the other approval is another person's."))
    audit.act_as(db.session, actor, reason=f"change request approved ({role.value})")
    capacity = "as QA" if role == Role.QA else "as QP"  # stored as signed: never translated
    signatures.apply_signature(actor, change, meaning=Meaning.APPROVED, allowed_meanings={Meaning.APPROVED},
                               site_id=change.site_id, comment=capacity, signer=signer)
    now = utcnow()
    if role == Role.QA:
        change.qa_approved_at, change.qa_approved_by_id = now, actor.id
    else:
        change.qp_approved_at, change.qp_approved_by_id = now, actor.id
    if not approvals_missing(change):
        change.status = ChangeStatus.APPROVED
        change.decided_at = now
    return change


@transactional
def reject_change_request(actor: User, change: ChangeRequest, command: RejectChangeRequest) -> ChangeRequest:
    """QA (or the QP of a change that affects released products) rejects a submitted change with a reason."""
    allowed = actor.has_role(Role.QA, change.site_id) or (change.needs_qp and actor.has_role(Role.QP, change.site_id))
    permissions.require(allowed, _("Only QA of the site, or its QP for a change to released products, rejects it."))
    if change.status != ChangeStatus.SUBMITTED:
        raise Conflict(_("%(number)s is %(status)s: only a submitted change is rejected.", number=change.number,
                         status=change.status.label))
    audit.act_as(db.session, actor, reason=command.reason)
    change.status = ChangeStatus.REJECTED
    change.rejection_reason = command.reason
    change.decided_at = utcnow()
    return change


@transactional
def add_action(actor: User, change: ChangeRequest, command: AddChangeAction) -> ChangeAction:
    """QA adds an action to a submitted or approved change, with its owner (an active user of the site) and due
    date (today or later)."""
    _require_qa(actor, change.site_id)
    if change.status not in (ChangeStatus.SUBMITTED, ChangeStatus.APPROVED):
        raise Conflict(_("%(number)s is %(status)s: actions are added to a submitted or approved change.",
                         number=change.number, status=change.status.label))
    errors: dict[str, str] = {}
    person = db.session.scalar(sa.select(User).where(User.username == command.owner))
    if person is None or not person.active or not person.has_any_role(permissions.SITE_STAFF, change.site_id):
        errors["owner"] = _("Name an active user of the site as owner.")
    if command.due_date < local_today(change.site.timezone):
        errors["due_date"] = _("The due date is in the past.")
    _refuse(str(AddChangeAction.refusal), errors)
    audit.act_as(db.session, actor)
    action = ChangeAction(change_request=change, site_id=change.site_id, description=command.description,
                          owner_id=person.id, due_date=command.due_date, created_by_id=actor.id)
    db.session.add(action)
    db.session.flush()
    return action


@transactional
def complete_action(actor: User, action: ChangeAction, command: CompleteChangeAction) -> ChangeAction:
    """The action's owner, or QA of the site, completes it with what was done."""
    if actor.id != action.owner_id:
        _require_qa(actor, action.site_id, _("Only the owner of the action or QA of the site completes it."))
    if action.completed_at is not None:
        raise Conflict(_("This action is already completed."))
    if action.change_request.status not in (ChangeStatus.SUBMITTED, ChangeStatus.APPROVED):
        raise Conflict(_("%(number)s is %(status)s: its actions no longer change.",
                         number=action.change_request.number, status=action.change_request.status.label))
    audit.act_as(db.session, actor, reason="change action completed")
    action.completed_at = utcnow()
    action.completion_note = command.note
    return action


@transactional
def close_change_request(actor: User, change: ChangeRequest, command: CloseChangeRequest) -> ChangeRequest:
    """QA closes an approved change once each of its actions is completed."""
    _require_qa(actor, change.site_id)
    if change.status != ChangeStatus.APPROVED:
        raise Conflict(_("%(number)s is %(status)s: only an approved change is closed.", number=change.number,
                         status=change.status.label))
    if change.open_actions:
        raise Conflict(_("%(number)s still has %(count)s open actions: complete them first.", number=change.number,
                         count=len(change.open_actions)))
    audit.act_as(db.session, actor, reason=command.note or "change request closed")
    change.status = ChangeStatus.CLOSED
    change.closed_at = utcnow()
    change.closed_by_id = actor.id
    change.closing_note = command.note
    return change
