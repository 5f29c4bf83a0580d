"""Product master data (QA-owned; everyone in manufacturing reads): products, specification versions,
drafts with their process template and tests, and approval with an electronic signature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.core.commands import Command
from cellfactory.core.errors import Conflict, DomainError, NotFound
from cellfactory.core.forms import REFUSED, BaseForm, apply_domain_errors, submit
from cellfactory.core.i18n import _
from cellfactory.core.permissions import READ_ROLES, roles_required
from cellfactory.documents import services as document_services
from cellfactory.documents.commands import CiteChangeRequest
from cellfactory.extensions import db
from cellfactory.products import services
from cellfactory.products.commands import (
    AddSpecTest,
    ChangeLabelling,
    ChangeProductSettings,
    ChangeSpecTest,
    CreateDraft,
    CreateProduct,
    EditDraft,
)
from cellfactory.products.forms import (
    ApprovalForm,
    ChangeRequestForm,
    DraftForm,
    LabellingForm,
    ProductForm,
    ProductSettingsForm,
    TestEditForm,
    TestForm,
    parse_steps,
    steps_text,
)
from cellfactory.products.models import Product, SpecificationVersion, SpecStatus, SpecTest
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import mark_signed
from cellfactory.signatures.models import Meaning

bp = Blueprint("products", __name__, url_prefix="/products")

CommandT = TypeVar("CommandT", bound=Command)


def _user():
    return current_user._get_current_object()


def _is_qa() -> bool:
    return _user().has_role(Role.QA)


def _status(form) -> int:
    return 422 if (form.errors or form.form_errors) else 200


def _specification(code: str, number: int) -> SpecificationVersion:
    product = services.get_product(code)
    spec = db.session.scalar(sa.select(SpecificationVersion).where(SpecificationVersion.product_id == product.id,
                                                                   SpecificationVersion.number == number))
    if spec is None:
        raise NotFound(_("%(code)s has no specification version %(number)s.", code=product.code, number=number))
    return spec


def _command(form: BaseForm, command: type[CommandT], **context: Callable[[], Any]) -> CommandT | None:
    """The command a submitted form asks for, or None (not submitted, or refused). The form's own refusals (a number
    that is no number, text that cannot be stored) and the command's are shown together, each next to its field;
    `context` gives the values read otherwise than from the form's fields (the steps typed as text)."""
    if not form.is_submitted():
        return None
    valid = form.validate()
    try:
        built = command.from_form(form, **{name: read() for name, read in context.items()})
    except DomainError as error:
        unplaced = {name: message for name, message in error.fields.items() if name not in form}
        for name, message in error.fields.items():
            if name in form and not form[name].errors:
                form[name].errors = [message]
        if unplaced or not error.fields:
            form.form_errors.append(error.message)
        return None
    return built if valid else None


# --- products ------------------------------------------------------------------------------------


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> str:
    products = list(db.session.scalars(sa.select(Product).order_by(Product.code)))
    current = {p.id: next((s for s in p.specifications if s.status == SpecStatus.APPROVED), None) for p in products}
    drafts = {p.id: next((s for s in p.specifications if s.status == SpecStatus.DRAFT), None) for p in products}
    return render_template("products/list.html", products=products, current=current, drafts=drafts,
                           can_edit=_is_qa())


@bp.route("/new", methods=["GET", "POST"])
@roles_required(Role.QA)
def new():
    form = ProductForm()
    command = _command(form, CreateProduct)
    if command is not None:
        try:
            product = services.create_product(_user(), command)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Product %(code)s created. Draft its first specification next.", code=product.code), "success")
            return redirect(url_for("products.detail", code=product.code))
    return render_template("products/new.html", form=form), _status(form)


def _render_product(product: Product, draft_form: DraftForm | None = None, status: int = 200,
                    settings_form: ProductSettingsForm | None = None):
    latest = product.specifications[-1] if product.specifications else None
    draft = next((s for s in product.specifications if s.status == SpecStatus.DRAFT), None)
    if draft_form is None:
        draft_form = DraftForm(prefix="draft")
        if latest is not None:
            draft_form.steps.data = steps_text(latest.steps)
            draft_form.max_passage.data = latest.max_passage
            draft_form.max_cumulative_pd.data = latest.max_cumulative_pd
    history = list(db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "product", AuditEntry.entity_id == str(product.id))
        .order_by(AuditEntry.seq.desc()).limit(100)))
    if settings_form is None:
        settings_form = ProductSettingsForm(prefix="settings", obj=product)
        settings_form.collection_type.data = product.collection_type.value
    return render_template("products/detail.html", product=product, draft=draft, latest=latest,
                           draft_form=draft_form, settings_form=settings_form, can_edit=_is_qa(),
                           history=history), status


@bp.route("/<code>")
@roles_required(READ_ROLES)
def detail(code: str):
    return _render_product(services.get_product(code))


@bp.route("/<code>/settings", methods=["POST"])
@roles_required(Role.QA)
def settings(code: str):
    product = services.get_product(code)
    form = ProductSettingsForm(prefix="settings")
    command = _command(form, ChangeProductSettings)
    if command is not None:
        try:
            services.update_product_settings(_user(), product, command)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Settings of %(code)s saved: units made from now on take their expiry from them.",
                    code=product.code), "success")
            return redirect(url_for("products.detail", code=product.code))
    return _render_product(product, status=422, settings_form=form)


@bp.route("/<code>/specifications", methods=["POST"])
@roles_required(Role.QA)
def new_draft(code: str):
    product = services.get_product(code)
    form = DraftForm(prefix="draft")
    command = _command(form, CreateDraft, steps=lambda: parse_steps(form.steps.data))
    if command is not None:
        try:
            spec = services.create_draft(_user(), product, command)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Draft %(specification)s created with the tests of the previous version: edit it, then approve "
                    "it.", specification=spec.label), "success")
            return redirect(url_for("products.specification", code=product.code, number=spec.number))
    return _render_product(product, form, 422)


# --- specification versions ----------------------------------------------------------------------


def _render_spec(spec: SpecificationVersion, status: int = 200, **forms):
    editable = spec.status == SpecStatus.DRAFT and _is_qa()
    if editable:
        if "draft_form" not in forms:
            form = DraftForm(prefix="draft")
            form.change_summary.data = spec.change_summary
            form.max_passage.data = spec.max_passage
            form.max_cumulative_pd.data = spec.max_cumulative_pd
            form.steps.data = steps_text(spec.steps)
            forms["draft_form"] = form
        forms.setdefault("test_form", TestForm(prefix="test"))
        forms.setdefault("cite_form", ChangeRequestForm(prefix="cite",
                                                        data={"change_request": spec.change_request_number}))
        forms.setdefault("approval_form", ApprovalForm.for_meanings([Meaning.APPROVED], prefix="approve"))
    else:
        # A form sent to a version that is no longer an editable draft is not shown again: say why it failed.
        for form in forms.values():
            for message in form.form_errors or [e for errors in form.errors.values() for e in errors]:
                flash(message, "error")
    signatures = [(s, signature_services.verify(s, spec).value) for s in signature_services.signatures_for(spec)]
    ids = [str(t.id) for t in spec.tests]
    history = list(db.session.scalars(sa.select(AuditEntry).where(sa.or_(
        sa.and_(AuditEntry.entity_type == "specification_version", AuditEntry.entity_id == str(spec.id)),
        sa.and_(AuditEntry.entity_type == "spec_test", AuditEntry.entity_id.in_(ids or ["-"])),
    )).order_by(AuditEntry.seq.desc()).limit(200)))
    return render_template("products/specification.html", spec=spec, product=spec.product, editable=editable,
                           signatures=signatures, history=history, **forms), status


@bp.route("/<code>/specifications/<int:number>")
@roles_required(READ_ROLES)
def specification(code: str, number: int):
    return _render_spec(_specification(code, number))


@bp.route("/<code>/specifications/<int:number>/change-request", methods=["POST"])
@roles_required(Role.QA)
def cite_change_request(code: str, number: int):
    spec = _specification(code, number)
    form = ChangeRequestForm(prefix="cite")
    cited = submit(form, lambda: document_services.cite_in_specification(_user(), spec,
                                                                         CiteChangeRequest.from_form(form)))
    if cited is not REFUSED:
        flash(_("%(specification)s cites %(number)s.", specification=spec.label, number=spec.change_request_number),
              "success")
        return redirect(url_for("products.specification", code=code, number=number))
    return _render_spec(spec, 422, cite_form=form)


@bp.route("/<code>/specifications/<int:number>/edit", methods=["POST"])
@roles_required(Role.QA)
def edit_draft(code: str, number: int):
    spec = _specification(code, number)
    form = DraftForm(prefix="draft")
    command = _command(form, EditDraft, steps=lambda: parse_steps(form.steps.data))
    if command is not None:
        try:
            services.update_draft(_user(), spec, command)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("%(specification)s saved.", specification=spec.label), "success")
            return redirect(url_for("products.specification", code=code, number=number))
    return _render_spec(spec, 422, draft_form=form)


@bp.route("/<code>/specifications/<int:number>/tests", methods=["POST"])
@roles_required(Role.QA)
def add_test(code: str, number: int):
    spec = _specification(code, number)
    form = TestForm(prefix="test")
    command = _command(form, AddSpecTest)
    if command is not None:
        try:
            test = services.add_test(_user(), spec, command)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Test %(code)s added to %(specification)s.", code=test.code, specification=spec.label), "success")
            return redirect(url_for("products.specification", code=code, number=number) + "#tests")
    return _render_spec(spec, 422, test_form=form)


@bp.route("/<code>/specifications/<int:number>/tests/<test_code>", methods=["GET", "POST"])
@roles_required(Role.QA)
def edit_test(code: str, number: int, test_code: str):
    spec = _specification(code, number)
    test = db.session.scalar(sa.select(SpecTest).where(SpecTest.specification_id == spec.id,
                                                       SpecTest.code == test_code.upper()))
    if test is None:
        raise NotFound(_("%(specification)s has no test %(code)s.", specification=spec.label, code=repr(test_code)))
    if spec.status != SpecStatus.DRAFT:
        raise Conflict(_("%(specification)s is %(status)s: approved versions never change; draft a new version.",
                         specification=spec.label, status=spec.status.label))
    form = TestEditForm(obj=test)
    form.code.render_kw = {"readonly": True}
    if not form.is_submitted():
        form.stage.data, form.criterion.data = test.stage.value, test.criterion.value
    # A test's code is its identity within the version: the one in the address, whatever the form says.
    command = _command(form, ChangeSpecTest, code=lambda: test.code)
    if command is not None:
        try:
            services.update_test(_user(), test, command)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Test %(code)s of %(specification)s saved.", code=test.code, specification=spec.label), "success")
            return redirect(url_for("products.specification", code=code, number=number) + "#tests")
    return render_template("products/test_form.html", form=form, spec=spec, test=test), _status(form)


@bp.route("/<code>/specifications/<int:number>/approve", methods=["POST"])
@roles_required(Role.QA)
def approve(code: str, number: int):
    spec = _specification(code, number)
    form = ApprovalForm.for_meanings([Meaning.APPROVED], prefix="approve")
    if form.validate_on_submit():
        try:
            services.approve(_user(), spec, signer=form.signer)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            mark_signed()
            flash(_("%(specification)s approved and signed. New batches of %(code)s use it from now on.",
                    specification=spec.label, code=spec.product.code), "success")
            return redirect(url_for("products.specification", code=code, number=number))
    return _render_spec(spec, 422, approval_form=form)


@bp.route("/<code>/labelling", methods=["GET", "POST"])
@roles_required(READ_ROLES)
def labelling(code: str):
    """What the product's unit labels carry besides its identity; QA changes it with a reason."""
    product = services.get_product(code)
    form = LabellingForm(obj=product)
    if request.method == "POST":
        saved = submit(form, lambda: services.change_labelling(_user(), product, ChangeLabelling.from_form(form)))
        if saved:
            flash(_("Labelling of %(code)s saved: labels printed from now on carry it.", code=product.code),
                  "success")
            return redirect(url_for("products.detail", code=product.code))
    return render_template("products/labelling.html", product=product, form=form, can_edit=_is_qa()), (
        422 if form.errors or form.form_errors else 200)
