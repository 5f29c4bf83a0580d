"""After a refused submission the page opens with an error summary at the top: each problem a link to its field
(issue 16: a wrong password at step verification showed its message thousands of pixels down the page)."""

from __future__ import annotations

import html
import re

from flask_wtf import FlaskForm
from wtforms import StringField

from cellfactory.core.error_summary import Problem, problems
from tests.conftest import login
from tests.test_batch_pages import _step, _switch, batch, iso_data, plant, record  # noqa: F401 - the fixtures


class Pair(FlaskForm):
    class Meta:
        csrf = False

    first = StringField("First")
    second = StringField("Second")


def test_the_summary_lists_every_problem_of_every_form_on_the_page_once(app):
    with app.test_request_context():
        top, other, clean = Pair(prefix="top"), Pair(prefix="row-3"), Pair(prefix="quiet")
        top.first.errors = ["Enter the first."]
        top.form_errors.append("Your password is not right.")
        other.second.errors = ["Too long."]
        found = problems({"page_errors": ["The batch moved meanwhile."], "form": top,
                          "forms": {"verify-3": other, "again": top}, "rows": [(1, clean, None)]})
    assert found == [Problem("The batch moved meanwhile."), Problem("Your password is not right."),
                     Problem("Enter the first.", "top-first"), Problem("Too long.", "row-3-second")]


def summary(page: str) -> str | None:
    match = re.search(r'<div class="error-summary"[^>]*>.*?</div>', page, re.S)
    return match.group(0) if match else None


def test_a_wrong_password_at_step_verification_opens_the_page_with_the_summary(client, plant, batch):  # noqa: F811
    login(client, "technician.bg")
    record(client, batch, "ISO", iso_data(plant, _step(batch, "ISO")))
    _switch(client, "technician2.bg")
    assert summary(client.get(f"/batches/{batch.number}").get_data(as_text=True)) is None
    response = client.post(f"/batches/{batch.number}/steps/ISO/verify",
                           data={"verify-ISO-meaning": "VERIFIED", "verify-ISO-username": "technician2.bg",
                                 "verify-ISO-password": "wrong password"})
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    found = summary(page)
    assert found is not None and "autofocus" in found and 'tabindex="-1"' in found
    # At the top of the page's content, before the batch itself, and before any other form.
    main = page.index('<main class="page"')
    assert main < page.index('class="error-summary"') < page.index("<h1") and page.index("<form", main) > page.index(
        'class="error-summary"')
    links = re.findall(r'<a href="#([^"]+)">(.*?)</a>', found)
    assert links, found
    for target, message in links:
        assert f'id="{target}"' in page, target
        assert html.unescape(message).strip()
