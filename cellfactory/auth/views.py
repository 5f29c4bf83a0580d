from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user
from werkzeug.wrappers import Response

from cellfactory.auth import services
from cellfactory.auth.commands import ChooseLanguage
from cellfactory.auth.forms import ChangePasswordForm, LanguageForm, LoginForm
from cellfactory.core.errors import DomainError
from cellfactory.core.forms import apply_domain_errors
from cellfactory.core.i18n import _
from cellfactory.core.permissions import any_authenticated_user, public

bp = Blueprint("auth", __name__, url_prefix="/auth")


def _safe_next(target: str | None) -> str:
    if not target or urlsplit(target).netloc or urlsplit(target).scheme or not target.startswith("/") \
            or target.startswith("//"):
        return url_for("main.dashboard")
    return target


def start_session(user) -> None:
    from cellfactory.web import SESSION_TOKEN_KEY

    session.clear()  # no session fixation: a fresh session at every log-in
    token = services.open_session(user, remote_addr=request.remote_addr, user_agent=request.user_agent.string)
    login_user(user)
    session.permanent = True
    session[SESSION_TOKEN_KEY] = token


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> str | Response:
    if current_user.is_authenticated:
        return redirect(url_for("main.dashboard"))
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = services.log_in(form.username.data, form.password.data)
        except DomainError as error:
            form.password.data = ""
            form.form_errors.append(error.message)
        else:
            start_session(user)
            if user.must_change_password:
                flash(_("Welcome. Choose your own password before you go on."), "info")
                return redirect(url_for("auth.change_password"))
            return redirect(_safe_next(request.args.get("next")))
    status = 401 if form.form_errors else 422 if form.errors else 200
    return render_template("auth/login.html", form=form,
                           idle_minutes=current_app.config["CELLFACTORY"].session_idle_minutes), status


@bp.route("/logout", methods=["POST"])
@any_authenticated_user
def logout() -> Response:
    from cellfactory.web import end_session

    end_session(current_user._get_current_object(), "user logged out")
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@any_authenticated_user
def change_password() -> str | Response:
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            user = services.change_own_password(current_user._get_current_object(), form.current_password.data,
                                                form.new_password.data)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            start_session(user)
            flash(_("Your password is changed. Your other sessions were signed out."), "success")
            return redirect(url_for("main.dashboard"))
    cfg = current_app.config["CELLFACTORY"]
    return render_template("auth/change_password.html", form=form, min_length=cfg.password_min_length,
                           history=cfg.password_history)


@bp.route("/language", methods=["POST"])
@any_authenticated_user
def choose_language() -> Response:
    """The person's own language, from the form on their account page; back to the page they came from."""
    form = LanguageForm()
    if form.validate_on_submit():
        try:
            services.choose_language(current_user._get_current_object(),
                                     ChooseLanguage.parse({"language": form.language.data or None}))
        except DomainError as error:
            flash(error.message, "error")
        else:
            from flask_babel import refresh

            refresh()
            flash(_("Language saved."), "success")
    else:
        flash(_("Choose Italiano, English or the site's language."), "error")
    return redirect(_safe_next(request.form.get("next")))
