"""/api/v1/products: products and their versioned specifications over JSON, with the commands and the services
the product pages use."""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy as sa
from flask import request
from pydantic import Field

from cellfactory.api import bp, page_json, text_problems
from cellfactory.api.contract import Moment, Output, api_user, check_types, operation, read_body, signer_of, username
from cellfactory.auth.models import Role
from cellfactory.core.commands import Command
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, roles_required
from cellfactory.documents import services as document_services
from cellfactory.documents.commands import CiteChangeRequest
from cellfactory.extensions import db
from cellfactory.products import services
from cellfactory.products.commands import (
    NUMBERS,
    WHOLE_NUMBERS,
    AddSpecTest,
    ApproveSpecification,
    ChangeLabelling,
    ChangeProductSettings,
    ChangeSpecTest,
    CreateDraft,
    CreateProduct,
    EditDraft,
    TemplateStep,
)
from cellfactory.products.models import (
    CollectionType,
    CriterionKind,
    Product,
    SpecificationVersion,
    SpecStatus,
    SpecTest,
    TestStage,
)
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.api import SignatureOut
from cellfactory.signatures.models import Meaning

CommandT = TypeVar("CommandT", bound=Command)

class ShelfLifeOut(Output):
    fresh_hours: int
    cryopreserved_days: int
    after_thaw_hours: int


class VersionRefOut(Output):
    number: int
    status: SpecStatus


class ProductOut(Output):
    code: str
    name: str
    description: str
    cellular: bool = Field(description="false for acellular products (no cell counts, no passages)")
    dose_unit: str
    active: bool
    donor_min_age_years: int | None
    donor_max_age_years: int | None
    collection_type: CollectionType
    shelf_life: ShelfLifeOut
    current_specification: int | None = Field(description="The approved version's number")
    draft_specification: int | None
    specifications: list[VersionRefOut]
    version: int

    @classmethod
    def of(cls, product: Product) -> ProductOut:
        current = next((s for s in product.specifications if s.status == SpecStatus.APPROVED), None)
        draft = next((s for s in product.specifications if s.status == SpecStatus.DRAFT), None)
        return cls(code=product.code, name=product.name, description=product.description,
                   cellular=product.cellular, dose_unit=product.dose_unit, active=product.active,
                   donor_min_age_years=product.donor_min_age_years, donor_max_age_years=product.donor_max_age_years,
                   collection_type=product.collection_type,
                   shelf_life=ShelfLifeOut(fresh_hours=product.shelf_life_fresh_hours,
                                           cryopreserved_days=product.shelf_life_cryo_days,
                                           after_thaw_hours=product.shelf_life_thawed_hours),
                   current_specification=current.number if current else None,
                   draft_specification=draft.number if draft else None,
                   specifications=[VersionRefOut(number=s.number, status=s.status) for s in product.specifications],
                   version=product.version)


class SpecTestOut(Output):
    code: str
    position: int
    name: str
    method: str
    unit: str
    stage: TestStage
    criterion: CriterionKind
    lower: float | None
    lower_inclusive: bool
    upper: float | None
    upper_inclusive: bool
    expected: str | None = Field(description="A qualitative test's expected result")
    informative_only: bool
    may_be_pending: bool = Field(description="May still be pending at a conditional release")
    physical_min: float | None = Field(description="A numeric test's smallest possible value")
    physical_max: float | None = Field(description="A numeric test's largest possible value")
    vocabulary: list[str] = Field(description="A qualitative test's values, the expected one among them")
    incubation_days: int | None
    criterion_text: str

    @classmethod
    def of(cls, test: SpecTest) -> SpecTestOut:
        return cls(code=test.code, position=test.position, name=test.name, method=test.method, unit=test.unit,
                   stage=test.stage, criterion=test.criterion, lower=test.lower, lower_inclusive=test.lower_inclusive,
                   upper=test.upper, upper_inclusive=test.upper_inclusive, expected=test.expected,
                   informative_only=test.informative_only, may_be_pending=test.may_be_pending,
                   physical_min=test.physical_min, physical_max=test.physical_max,
                   vocabulary=test.values if test.criterion == CriterionKind.QUALITATIVE else [],
                   incubation_days=test.incubation_days, criterion_text=test.criterion_text)


class SpecificationOut(Output):
    product: str
    number: int
    status: SpecStatus
    change_summary: str
    max_passage: int | None
    max_cumulative_pd: float | None
    steps: list[dict[str, Any]] = Field(description="The process template: code, name, kind (step or passage) and, "
                                                    "for a passage whose doublings do not count, pd_counted false")
    tests: list[SpecTestOut]
    created_at: Moment
    created_by: str | None
    approved_at: Moment | None
    approved_by: str | None
    change_request: str | None = Field(description="The change request that introduces the version")
    version: int

    @classmethod
    def fields_of(cls, spec: SpecificationVersion) -> dict[str, Any]:
        return {"product": spec.product.code, "number": spec.number, "status": spec.status,
                "change_summary": spec.change_summary, "max_passage": spec.max_passage,
                "max_cumulative_pd": spec.max_cumulative_pd, "steps": list(spec.steps or []),
                "tests": [SpecTestOut.of(t) for t in spec.tests], "created_at": spec.created_at,
                "created_by": username(spec.created_by_id), "approved_at": spec.approved_at,
                "approved_by": username(spec.approved_by_id), "change_request": spec.change_request_number,
                "version": spec.version}

    @classmethod
    def of(cls, spec: SpecificationVersion) -> SpecificationOut:
        return cls(**cls.fields_of(spec))


class SpecificationDetailOut(SpecificationOut):
    signatures: list[SignatureOut]

    @classmethod
    def of(cls, spec: SpecificationVersion) -> SpecificationDetailOut:
        signatures = [SignatureOut.of(s, signature_services.verify(s, spec).value)
                      for s in signature_services.signatures_for(spec)]
        return cls(**cls.fields_of(spec), signatures=signatures)


def _read(command: type[CommandT]) -> CommandT:
    """The body as `command`; its numbers are JSON numbers (text such as "5" is refused, as it always was), in the
    tests of a draft as well."""
    data = request.get_json(silent=True)
    if isinstance(data, dict):
        fields = command.model_fields
        check_types(data, numbers=tuple(n for n in NUMBERS if n in fields),
                    integers=tuple(n for n in WHOLE_NUMBERS if n in fields))
        # The fields a step or a test does not read are ignored, but their names and text are read as any other.
        for name, item_model in (("steps", TemplateStep), ("tests", AddSpecTest)):
            items = data.get(name) if name in fields else None
            for index, item in enumerate(items if isinstance(items, list) else []):
                if isinstance(item, dict):
                    unread = {key: "" if key in item_model.model_fields else value for key, value in item.items()}
                    hostile = text_problems(unread, f"{name}[{index}]")
                    if hostile:
                        raise ValidationFailed("Some text cannot be stored: " + ", ".join(hostile) + ".",
                                               fields=hostile)
        tests = data.get("tests") if "tests" in fields else None
        for index, test in enumerate(tests if isinstance(tests, list) else [], start=1):
            if not isinstance(test, dict):
                raise ValidationFailed(f"Test {index} must be an object.", fields={"tests": "A list of JSON objects."})
            try:
                check_types(test, numbers=NUMBERS, integers=("incubation_days",))
            except ValidationFailed as error:
                raise ValidationFailed(f"Test {index}: " + error.message,
                                       fields={"tests": f"Test {index}: wrong type of " + ", ".join(error.fields)}
                                       ) from error
    return read_body(command)


def _specification(code: str, number: int) -> SpecificationVersion:
    product = services.get_product(code)
    spec = db.session.scalar(sa.select(SpecificationVersion).where(SpecificationVersion.product_id == product.id,
                                                                   SpecificationVersion.number == number))
    if spec is None:
        raise NotFound(f"{product.code} has no specification version {number}.")
    return spec


@bp.get("/products")
@roles_required(READ_ROLES)
@operation("Products of the network (master data)", response=ProductOut, paged=True)
def products():
    page, per_page = page_args(request.args)
    return page_json(paginate(sa.select(Product).order_by(Product.code), page, per_page),
                     lambda p: ProductOut.of(p).json())


@bp.post("/products")
@roles_required(Role.QA)
@operation("Create a product (QA)", body=CreateProduct, response=ProductOut, status=201, errors=(409,))
def create_product():
    return ProductOut.of(services.create_product(api_user(), _read(CreateProduct))).json(), 201


@bp.patch("/products/<code>/settings")
@roles_required(Role.QA)
@operation("QA: whom the product is for (collection_type allogeneic, autologous or directed) and its validated "
           "shelf lives, from which unit expiry is derived; with a reason. Fields left out stay as they are",
           body=ChangeProductSettings, response=ProductOut, errors=(404,))
def product_settings(code: str):
    found = services.get_product(code)
    command = _read(ChangeProductSettings)
    return ProductOut.of(services.update_product_settings(api_user(), found, command)).json()


@bp.get("/products/<code>")
@roles_required(READ_ROLES)
@operation("One product with its specification versions", response=ProductOut, errors=(404,))
def product(code: str):
    return ProductOut.of(services.get_product(code)).json()


@bp.get("/products/<code>/specifications")
@roles_required(READ_ROLES)
@operation("Specification versions, newest first", response=SpecificationOut, paged=True, errors=(404,))
def specifications(code: str):
    found = services.get_product(code)
    page, per_page = page_args(request.args)
    query = sa.select(SpecificationVersion).where(SpecificationVersion.product_id == found.id) \
        .order_by(SpecificationVersion.number.desc())
    return page_json(paginate(query, page, per_page), lambda s: SpecificationOut.of(s).json())


@bp.post("/products/<code>/specifications")
@roles_required(Role.QA)
@operation("Draft a new version (QA); left-out steps, tests and limits are copied from the latest version; one "
           "draft at a time (409)", body=CreateDraft, response=SpecificationDetailOut, status=201,
           errors=(404, 409))
def create_specification(code: str):
    found = services.get_product(code)
    spec = services.create_draft(api_user(), found, _read(CreateDraft))
    return SpecificationDetailOut.of(spec).json(), 201


@bp.get("/products/<code>/specifications/<int:number>")
@roles_required(READ_ROLES)
@operation("One version with its tests and signatures", response=SpecificationDetailOut, errors=(404,))
def specification(code: str, number: int):
    return SpecificationDetailOut.of(_specification(code, number)).json()


@bp.put("/products/<code>/specifications/<int:number>")
@roles_required(Role.QA)
@operation("Edit a draft's summary, limits and steps (QA); an approved version is 409", body=EditDraft,
           response=SpecificationDetailOut, errors=(404, 409))
def update_specification(code: str, number: int):
    spec = _specification(code, number)
    updated = services.update_draft(api_user(), spec, _read(EditDraft))
    return SpecificationDetailOut.of(updated).json()


@bp.post("/products/<code>/specifications/<int:number>/tests")
@roles_required(Role.QA)
@operation("Add a test to a draft (QA); an approved version is 409", body=AddSpecTest, response=SpecTestOut,
           status=201, errors=(404, 409))
def add_specification_test(code: str, number: int):
    spec = _specification(code, number)
    test = services.add_test(api_user(), spec, _read(AddSpecTest))
    return SpecTestOut.of(test).json(), 201


@bp.put("/products/<code>/specifications/<int:number>/tests/<test_code>")
@roles_required(Role.QA)
@operation("Change a test of a draft (QA); its code stays the one in the address; an approved version is 409",
           body=ChangeSpecTest, response=SpecTestOut, errors=(404, 409))
def update_specification_test(code: str, number: int, test_code: str):
    spec = _specification(code, number)
    test = db.session.scalar(sa.select(SpecTest).where(SpecTest.specification_id == spec.id,
                                                       SpecTest.code == test_code.strip().upper()))
    if test is None:
        raise NotFound(f"{spec.label} has no test {test_code!r}.")
    updated = services.update_test(api_user(), test, _read(ChangeSpecTest))
    return SpecTestOut.of(updated).json()


@bp.put("/products/<code>/specifications/<int:number>/change-request")
@roles_required(Role.QA)
@operation("Cite the change request that introduces a draft version (QA): one you can see, submitted, approved or "
           "closed, naming the product; an approved version is 409", body=CiteChangeRequest,
           response=SpecificationDetailOut, errors=(404, 409))
def cite_change_request(code: str, number: int):
    spec = _specification(code, number)
    cited = document_services.cite_in_specification(api_user(), spec, _read(CiteChangeRequest))
    return SpecificationDetailOut.of(cited).json()


@bp.post("/products/<code>/specifications/<int:number>/approval")
@roles_required(Role.QA)
@operation("Approve a draft with an electronic signature meaning 'Approved' (QA, not an author of the version); "
           "the previous approved version is superseded. A wrong signing password is 401",
           body=ApproveSpecification, response=SpecificationDetailOut, errors=(404, 409))
def approve_specification(code: str, number: int):
    spec = _specification(code, number)
    command = read_body(ApproveSpecification)
    signer = signer_of(command, Meaning.APPROVED)
    return SpecificationDetailOut.of(services.approve(api_user(), spec, signer=signer)).json()


class LabellingOut(Output):
    code: str
    sec_distribution: bool = Field(description="true: distributed under the Single European Code (tissues and cells "
                                               "for human application); false: a medicinal product")
    cryoprotectant: str
    storage_temperature: str
    version: int

    @classmethod
    def of(cls, product: Product) -> LabellingOut:
        return cls(code=product.code, sec_distribution=product.sec_distribution,
                   cryoprotectant=product.cryoprotectant, storage_temperature=product.storage_temperature,
                   version=product.version)


@bp.get("/products/<code>/labelling")
@roles_required(READ_ROLES)
@operation("What the product's unit labels carry besides its identity, and whether it uses the SEC",
           response=LabellingOut, errors=(404,))
def product_labelling(code: str):
    return LabellingOut.of(services.get_product(code)).json()


@bp.put("/products/<code>/labelling")
@roles_required(Role.QA)
@operation("QA: whether the product is distributed under the Single European Code, its cryoprotectant and "
           "storage temperature as the unit label prints them; with a reason", body=ChangeLabelling,
           response=LabellingOut, errors=(404,))
def change_product_labelling(code: str):
    found = services.get_product(code)
    return LabellingOut.of(services.change_labelling(api_user(), found, _read(ChangeLabelling))).json()
