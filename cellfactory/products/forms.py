"""Forms of the product master-data pages (QA): products, specification drafts, tests, approval.

The forms carry the fields; what each must hold is the command's (`products/commands.py`), so the page and the
API refuse the same input with the same words."""

from __future__ import annotations

from typing import Any

from wtforms import BooleanField, DecimalField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, Optional

from cellfactory.core.errors import ValidationFailed
from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _, _l
from cellfactory.products.models import (
    ASEPTIC,
    COLLECTION_LABELS,
    PD_COUNTED,
    QUALIFICATIONS,
    SOPS,
    CollectionType,
    CriterionKind,
    StepKind,
    TestStage,
    is_aseptic,
    pd_counted,
    required_qualifications,
    required_sops,
)
from cellfactory.signatures.forms import SigningForm

STEP_HELP = _l("One step per line, in order: CODE | name | step or passage, e.g. \"P1 | Passage 1 | passage\". "
             "Without a kind the line is a plain step. A passage whose doublings do not count towards the cumulative "
             "population doublings (mononuclear cells seeded at P0: cPD counts from the first adherent culture) "
             "ends with \"| not counted\", e.g. \"P0 | Mononuclear cell seeding P0 | passage | not counted\". "
             "What a step asks of its operator follows, one item after each bar: \"aseptic\", \"sop:CODE\" for each "
             "SOP it is done by, \"qualification:media_fill\" or \"qualification:gowning\", e.g. "
             "\"SEED | Seeding | step | aseptic | sop:SOP-MFG-001 | qualification:media_fill\".")
NOT_COUNTED = "not counted"
ASEPTIC_FLAG = "aseptic"
SOP_FLAG = "sop:"
QUALIFICATION_FLAG = "qualification:"


COLLECTION_CHOICES = [(c.value, _l(COLLECTION_LABELS[c])) for c in CollectionType]


class ProductForm(BaseForm):
    code = StringField(_l("Code (2-16 letters or digits, e.g. UCMSC)"), validators=[Optional()],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off", "maxlength": 16})
    name = StringField(_l("Name"), validators=[Optional()], render_kw={"maxlength": 200})
    description = TextAreaField(_l("Description"), validators=[Optional()], render_kw={"maxlength": 4000})
    cellular = BooleanField(_l("Cellular product (cell counts and passages); clear for an acellular product such as "
                            "a secretome"), default=True)
    dose_unit = StringField(_l("Dose unit"), default="cells/kg", validators=[Optional()], render_kw={"maxlength": 40})
    donor_min_age_years = IntegerField(_l("Youngest donor accepted (years; the mother's age for a neonatal "
                                       "donation; empty: no limit)"), validators=[Optional()])
    donor_max_age_years = IntegerField(_l("Oldest donor accepted (years; empty: no limit)"), validators=[Optional()])
    # Left empty: the defaults (allogeneic; 24 h fresh, 365 days cryopreserved, 2 h after thawing).
    collection_type = SelectField(_l("Whom the units are for"), choices=COLLECTION_CHOICES, default="allogeneic")
    shelf_life_fresh_hours = IntegerField(_l("Shelf life fresh (hours from the fill)"), default=24,
                                          validators=[Optional()])
    shelf_life_cryo_days = IntegerField(_l("Shelf life cryopreserved (days from the cryopreservation)"), default=365,
                                        validators=[Optional()])
    shelf_life_thawed_hours = IntegerField(_l("Shelf life after thawing (hours from the thaw)"), default=2,
                                           validators=[Optional()])


class ProductSettingsForm(BaseForm):
    """QA changes whom a product is for and its validated shelf lives, with a reason. The page always shows the
    three shelf lives; the command (`ChangeProductSettings`) says what each must hold."""

    collection_type = SelectField(_l("Whom the units are for"), choices=COLLECTION_CHOICES)
    shelf_life_fresh_hours = IntegerField(_l("Shelf life fresh (hours from the fill)"),
                                          validators=[InputRequired(_l("Enter the fresh shelf life."))])
    shelf_life_cryo_days = IntegerField(_l("Shelf life cryopreserved (days from the cryopreservation)"),
                                        validators=[InputRequired(_l("Enter the cryopreserved shelf life."))])
    shelf_life_thawed_hours = IntegerField(_l("Shelf life after thawing (hours from the thaw)"),
                                           validators=[InputRequired(_l("Enter the shelf life after thawing."))])
    reason = TextAreaField(_l("Reason for the change (e.g. the stability study report)"), validators=[Optional()],
                           render_kw={"maxlength": 2000})


class DraftForm(BaseForm):
    """A specification version's summary, limits and process template (a new draft, or a draft edited). The page
    always shows the template, so an empty one is refused here in the command's words."""

    change_summary = TextAreaField(_l("What changes in this version"), validators=[Optional()],
                                   render_kw={"maxlength": 4000})
    max_passage = IntegerField(_l("Maximum passage number"), validators=[Optional()])
    max_cumulative_pd = DecimalField(_l("Maximum cumulative population doublings"), places=None,
                                     validators=[Optional()])
    steps = TextAreaField(_l("Process template"), description=STEP_HELP,
                          validators=[DataRequired(_l("Enter the steps, one per line.")), Length(max=8000)],
                          render_kw={"rows": 10, "spellcheck": "false"})
    reason = StringField(_l("Reason for the change (optional)"), validators=[Optional()], render_kw={"maxlength": 2000})


def _step_line(step: dict[str, Any]) -> str:
    parts = [step["code"], step["name"], step["kind"]]
    if not pd_counted(step):
        parts.append(NOT_COUNTED)
    if is_aseptic(step):
        parts.append(ASEPTIC_FLAG)
    parts += [SOP_FLAG + code for code in required_sops(step)]
    parts += [QUALIFICATION_FLAG + kind for kind in required_qualifications(step)]
    return " | ".join(parts)


def steps_text(steps: list[dict[str, Any]] | None) -> str:
    return "\n".join(_step_line(s) for s in steps or [])


def _flags(step: dict[str, Any], flags: list[str]) -> bool:
    """Put a line's flags on its step dict (in the command's shape, checked there); False on a word not known."""
    for flag in flags:
        word = flag.lower()
        if word == NOT_COUNTED:
            step[PD_COUNTED] = False
        elif word == ASEPTIC_FLAG:
            step[ASEPTIC] = True
        elif word.startswith(SOP_FLAG) and flag[len(SOP_FLAG):].strip():
            step.setdefault(SOPS, []).append(flag[len(SOP_FLAG):].strip())
        elif word.startswith(QUALIFICATION_FLAG):
            step.setdefault(QUALIFICATIONS, []).append(word[len(QUALIFICATION_FLAG):].strip())
        else:
            return False
    return True


def parse_steps(text: str) -> list[dict[str, Any]]:
    """The textarea's lines as the service's step dicts; a malformed line is refused naming its number."""
    steps = []
    kinds = {k.value for k in StepKind}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 2:
            parts.append(StepKind.STEP.value)
        flags, parts = parts[3:], parts[:3]
        step: dict[str, Any] = {}
        if len(parts) != 3 or not parts[0] or not parts[1] or parts[2].lower() not in kinds or not _flags(step, flags):
            raise ValidationFailed(_("Line %(number)s is not 'CODE | name | step or passage'.", number=number),
                                   fields={"steps": _("Line %(number)s: write CODE | name | step or passage.",
                                                      number=number)})
        steps.append({"code": parts[0].upper(), "name": parts[1], "kind": parts[2].lower()} | step)
    return steps


class ChangeRequestForm(BaseForm):
    change_request = StringField(_l("Change request number"), validators=[Optional(), Length(max=40)],
                                 render_kw={"autocapitalize": "characters", "spellcheck": "false"})


class TestForm(BaseForm):
    __test__ = False  # not a pytest class

    code = StringField(_l("Code"), validators=[Optional()],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off", "maxlength": 40})
    name = StringField(_l("Name"), validators=[Optional()], render_kw={"maxlength": 200})
    method = StringField(_l("Method"), validators=[Optional()], render_kw={"maxlength": 200})
    unit = StringField(_l("Unit"), validators=[Optional()], render_kw={"maxlength": 40})
    stage = SelectField(_l("Stage"), choices=[(TestStage.IN_PROCESS.value, _l("In-process")),
                                          (TestStage.RELEASE.value, _l("Release"))], default=TestStage.RELEASE.value)
    criterion = SelectField(_l("Acceptance criterion"), choices=[(CriterionKind.RANGE.value, _l("Numeric range")),
                                                             (CriterionKind.QUALITATIVE.value, _l("Expected result"))])
    lower = DecimalField(_l("Lower limit"), places=None, validators=[Optional()])
    lower_inclusive = BooleanField(_l("Lower limit included (≥)"), default=True)
    upper = DecimalField(_l("Upper limit"), places=None, validators=[Optional()])
    upper_inclusive = BooleanField(_l("Upper limit included (≤)"), default=True)
    physical_min = DecimalField(_l("Physically possible from (numeric; empty: 0)"), places=None,
                                validators=[Optional()])
    physical_max = DecimalField(_l("Physically possible up to (numeric; empty: 100 for %, else no maximum)"),
                                places=None, validators=[Optional()])
    expected = StringField(_l("Expected result (qualitative), e.g. no growth"), validators=[Optional()],
                           render_kw={"maxlength": 100})
    vocabulary = StringField(_l("The test's values (qualitative), separated by /, e.g. no growth / growth"),
                             validators=[Optional()], render_kw={"maxlength": 400})
    incubation_days = IntegerField(_l("Incubation before the final read, days (tests that may be pending)"),
                                   validators=[Optional()])
    informative_only = BooleanField(_l("For information only (not an acceptance criterion)"))
    may_be_pending = BooleanField(_l("May still be pending at a conditional release (e.g. sterility)"))

    def process(self, formdata=None, obj=None, data=None, **kwargs) -> None:
        super().process(formdata, obj, data, **kwargs)
        if isinstance(self.vocabulary.data, list):  # from the test being edited: shown as typed
            self.vocabulary.data = " / ".join(self.vocabulary.data)


class TestEditForm(TestForm):
    reason = StringField(_l("Reason for the change (optional)"), validators=[Optional()], render_kw={"maxlength": 2000})


class ApprovalForm(SigningForm):
    """Approving a draft: the signature's meaning is 'Approved'."""


class LabellingForm(BaseForm):
    sec_distribution = BooleanField(_l("Distributed under the Single European Code (tissues and cells for human "
                                       "application, e.g. HSC grafts; not for medicinal products)"))
    cryoprotectant = StringField(_l("Cryoprotectant (e.g. 10% DMSO)"), validators=[Optional()],
                                 render_kw={"maxlength": 100})
    storage_temperature = StringField(_l("Storage temperature (e.g. ≤ -150 °C)"), validators=[Optional()],
                                      render_kw={"maxlength": 60})
    reason = TextAreaField(_l("Reason for the change"), validators=[Optional()], render_kw={"maxlength": 2000})
