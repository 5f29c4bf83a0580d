from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, g, redirect, render_template, url_for
from flask_login import current_user

from cellfactory.auth import services as auth_services
from cellfactory.auth.forms import LanguageForm
from cellfactory.auth.models import ApiToken
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import DomainError
from cellfactory.core.forms import apply_domain_errors
from cellfactory.core.i18n import _, in_language, language_of
from cellfactory.core.permissions import any_authenticated_user
from cellfactory.extensions import db
from cellfactory.signatures import services
from cellfactory.signatures.forms import RevokeForm, SigningForm, TokenForm, mark_signed
from cellfactory.signatures.models import EsigAcknowledgement, Meaning

bp = Blueprint("signatures", __name__, url_prefix="/account")


def _render_account(sign_form: SigningForm, token_form: TokenForm, new_token: str | None = None):
    user = current_user._get_current_object()
    acknowledgement = db.session.scalar(sa.select(EsigAcknowledgement).where(EsigAcknowledgement.user_id == user.id))
    verification = services.current_identity_verification(user)
    tokens = list(db.session.scalars(sa.select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))
    can_sign, missing = services.signing_enabled(user)
    return render_template(
        "signatures/account.html", acknowledgement=acknowledgement, verification=verification,
        acknowledgement_signatures=services.signatures_for(acknowledgement) if acknowledgement else [],
        statement=services.accountability_statement(user), sign_form=sign_form, token_form=token_form, tokens=tokens,
        new_token=new_token, can_sign=can_sign, missing=missing, revoke_form=RevokeForm(), now=utcnow(),
        language_form=LanguageForm(language=user.language or ""),
    )


@bp.route("/")
@any_authenticated_user
def account() -> str:
    return _render_account(SigningForm.for_meanings([Meaning.ACCOUNTABILITY]), TokenForm())


@bp.route("/accountability", methods=["POST"])
@any_authenticated_user
def accept_accountability() -> str | Response:
    form = SigningForm.for_meanings([Meaning.ACCOUNTABILITY])
    if form.validate_on_submit():
        try:
            services.accept_accountability(current_user._get_current_object(), signer=form.signer)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            mark_signed()
            flash(_("You accepted the accountability statement; your signature is recorded."), "success")
            return redirect(url_for("signatures.account"))
    return _render_account(form, TokenForm()), 422


@bp.route("/accountability.pdf")
@any_authenticated_user
def accountability_pdf() -> Response:
    from cellfactory.web import display_timezone

    user = current_user._get_current_object()
    with in_language(language_of(user, g.site)):  # printed in the language the person reads
        data = services.print_accountability(user, display_timezone())
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="accountability-{current_user.username}.pdf"'})


@bp.route("/tokens", methods=["POST"])
@any_authenticated_user
def create_token() -> str | Response:
    form = TokenForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        try:
            raw = auth_services.create_token(user, user, form.name.data, form.scope.data)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Copy the token now: it is shown only once."), "warning")
            return _render_account(SigningForm.for_meanings([Meaning.ACCOUNTABILITY]), TokenForm(formdata=None),
                                   new_token=raw)
    return _render_account(SigningForm.for_meanings([Meaning.ACCOUNTABILITY]), form), 422


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
@any_authenticated_user
def revoke_token(token_id: int) -> Response:
    form = RevokeForm()
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != current_user.id:
        abort(404)
    if form.validate_on_submit():
        try:
            auth_services.revoke_token(current_user._get_current_object(), token,
                                       form.reason.data or "revoked by its owner")
        except DomainError as error:
            flash(error.message, "error")
        else:
            flash(_("Token revoked."), "success")
    return redirect(url_for("signatures.account"))
