"""Default-deny: every route refuses an anonymous user and a user without the role it declares."""

from __future__ import annotations

import pytest
from flask import Flask
from werkzeug.routing.converters import NumberConverter

from cellfactory.auth.models import Role
from cellfactory.core.permissions import ANY_ROLE
from tests.conftest import login

# A user for each role set: the first one holding none of the allowed roles is used.
PROBES = ["technician", "qc_analyst", "qa", "qp", "auditor", "admin"]

# Who may call each route, written out here and reviewed by hand, never read back from the views: a role
# granted by mistake in a view fails `test_the_views_grant_exactly_the_roles_of_the_table`.
# T technician, C QC analyst, Q QA, P Qualified Person, A auditor, D administrator;
# "any" every signed-in user, "public" no sign-in.
LETTERS = {"T": Role.TECHNICIAN, "C": Role.QC_ANALYST, "Q": Role.QA, "P": Role.QP, "A": Role.AUDITOR,
           "D": Role.ADMIN}
EXPECTED_ROLES = {
    # Biovigilance (issue 18).
    "api.add_vigilance_follow_up": "TCQP",
    "api.conclude_vigilance_report": "Q",
    "api.open_vigilance_deviation": "Q",
    "api.open_vigilance_recall": "Q",
    "api.record_vigilance_initial_report": "Q",
    "api.record_vigilance_report": "TCQP",
    "api.vigilance_final_pdf": "TCQPA",
    "api.vigilance_initial_pdf": "TCQPA",
    "api.vigilance_report": "TCQPA",
    "api.vigilance_reports": "TCQPA",
    "biovigilance.conclude": "Q",
    "biovigilance.detail": "TCQPA",
    "biovigilance.final_pdf": "TCQPA",
    "biovigilance.follow_up": "TCQP",
    "biovigilance.index": "TCQPA",
    "biovigilance.initial_pdf": "TCQPA",
    "biovigilance.initial_report": "Q",
    "biovigilance.new": "TCQP",
    "biovigilance.open_deviation": "Q",
    "biovigilance.open_recall": "Q",
    "admin.role_request_decide": "QPD",
    "admin.role_requests": "QPD",
    "admin.site_edit": "D",
    "admin.site_eu_coding": "D",
    "admin.site_new": "D",
    "admin.sites": "D",
    "admin.user_detail": "D",
    "admin.user_details": "D",
    "admin.user_end_session": "D",
    "admin.user_grant_role": "D",
    "admin.user_identity": "D",
    "admin.user_new": "D",
    "admin.user_reset_password": "D",
    "admin.user_revoke_role": "D",
    "admin.user_set_active": "D",
    "admin.user_unlock": "D",
    "admin.users": "D",
    "api.acknowledge_notification_task": "TQP",
    "api.acknowledge_notification_tasks": "Q",
    "api.add_action": "Q",
    "api.add_change_action": "Q",
    "api.add_screening_panel": "T",
    "api.add_screening_result": "T",
    "api.add_sop_version": "TCQP",
    "api.add_specification_test": "Q",
    "api.administer_unit": "T",
    "api.allocate_din": "T",
    "api.allocate_unit": "TQ",
    "api.announce_material": "T",
    "api.approve_change_request": "QP",
    "api.approve_sop_version": "Q",
    "api.approve_specification": "Q",
    "api.audit_trail": "QPA",
    "api.batch": "TCQPA",
    "api.batch_passages": "TCQPA",
    "api.batch_results": "TCQPA",
    "api.batch_steps": "TCQPA",
    "api.batch_transition": "TCQP",
    "api.batches": "TCQPA",
    "api.cancel_expected_material": "T",
    "api.cancel_prescription": "TQ",
    "api.carry_action": "Q",
    "api.catalogue_items": "TCQPA",
    "api.change_request": "TCQPA",
    "api.change_requests": "TCQPA",
    "api.cite_change_request": "Q",
    "api.close_change_request": "Q",
    "api.close_deviation": "Q",
    "api.complete_action": "TCQP",
    "api.complete_change_action": "TCQP",
    "api.confirmatory_testing": "Q",
    "api.correct_screening_result": "T",
    "api.create_catalogue_item": "Q",
    "api.create_prescription": "TQ",
    "api.create_product": "Q",
    "api.create_shipment": "T",
    "api.create_site": "D",
    "api.site_eu_coding": "D",
    "api.create_sop": "TCQP",
    "api.create_specification": "Q",
    "api.create_storage_location": "TQ",
    "api.create_units": "T",
    "api.create_user": "D",
    "api.destroy_unit": "TQ",
    "api.deviation": "TCQPA",
    "api.deviations": "TCQPA",
    "api.donor": "TCQPA",
    "api.donors": "TCQPA",
    "api.em_acknowledge": "Q",
    "api.em_add_plan": "Q",
    "api.em_close": "Q",
    "api.em_declare_device": "Q",
    "api.em_declare_point": "Q",
    "api.em_declare_room": "Q",
    "api.em_enter_results": "TQ",
    "api.em_excursions": "TCQPA",
    "api.em_limits": "TCQPA",
    "api.em_missing_sample": "TQ",
    "api.em_open_session": "TQ",
    "api.em_points": "TCQPA",
    "api.em_rooms": "TCQPA",
    "api.em_session": "TCQPA",
    "api.em_sessions": "TCQPA",
    "api.em_set_alert_level": "Q",
    "api.enter_result": "C",
    "api.equipment": "TCQPA",
    "api.equipment_event_certificate": "TCQPA",
    "api.equipment_event_deviation": "Q",
    "api.equipment_event_impact": "TCQPA",
    "api.equipment_events": "TCQPA",
    "api.equipment_list": "TCQPA",
    "api.equipment_status": "TQ",
    "api.expected_materials": "TCQPA",
    "api.final_read": "C",
    "api.invalidate_result": "Q",
    "api.lot": "TCQPA",
    "api.lot_status": "Q",
    "api.lots": "TCQPA",
    "api.material": "TCQPA",
    "api.material_label": "TQ",
    "api.materials": "TCQPA",
    "api.me": "any",
    "api.notification_tasks": "TCQPA",
    "api.open_change_request": "TCQP",
    "api.open_deviation": "TCQP",
    "api.openapi": "public",
    "api.prescription": "TCQPA",
    "api.prescriptions": "TCQPA",
    "api.product": "TCQPA",
    "api.product_labelling": "TCQPA",
    "api.change_product_labelling": "Q",
    "api.product_dosing": "TCQPA",
    "api.product_settings": "Q",
    "api.products": "TCQPA",
    "api.quarantine_decision": "Q",
    "api.recall_batch": "QP",
    "api.recalls": "TCQPA",
    "api.open_recall": "QP",
    "api.recall_detail": "TCQPA",
    "api.account_for_recall_unit": "QP",
    "api.acknowledge_recall_notice": "QP",
    "api.close_recall": "QP",
    "recalls.index": "TCQPA",
    "recalls.new": "QP",
    "recalls.detail": "TCQPA",
    "recalls.account": "QP",
    "recalls.acknowledge": "QP",
    "recalls.close": "QP",
    "api.receive_lot": "TQ",
    "api.receive_material": "T",
    "api.receive_shipment": "T",
    "api.record_calibration": "TQ",
    "api.record_equipment_event": "TQ",
    "api.record_investigation": "Q",
    "api.record_qualification": "TCQP",
    "api.record_step": "T",
    "api.record_training": "TCQP",
    "api.register_donor": "T",
    "api.register_equipment": "TQ",
    "api.reject_change_request": "QP",
    "api.release_allocation": "TQ",
    "api.release_batch_units": "QP",
    "api.release_certificate_pdf": "TCQPA",
    "api.release_certification": "TCQPA",
    "api.release_certification_decision": "P",
    "api.release_record_pdf": "TCQPA",
    "api.release_register": "QPA",
    "api.release_reservation": "TQ",
    "api.release_review": "TCQPA",
    "api.release_review_decision": "Q",
    "api.reserve_unit": "TQ",
    "api.risk_assessment": "Q",
    "api.screening": "TCQPA",
    "api.set_product_dosing": "Q",
    "api.set_training_grace": "Q",
    "api.set_training_requirement": "Q",
    "api.shipment_detail": "TCQPA",
    "api.shipment_list": "TCQPA",
    "api.shipment_temperature_log": "TCQPA",
    "api.site": "any",
    "api.sites": "any",
    "api.sop": "TCQPA",
    "api.sop_version": "TCQPA",
    "api.sop_version_pdf": "TCQPA",
    "api.sop_versions": "TCQPA",
    "api.sops": "TCQPA",
    "api.specification": "TCQPA",
    "api.specifications": "TCQPA",
    "api.start_batch": "T",
    "api.storage_list": "TCQPA",
    "api.storage_location": "TCQPA",
    "api.store_unit": "TQ",
    "api.submit_change_request": "TCQP",
    "api.take_out_unit": "TQ",
    "api.thaw_unit": "T",
    "api.trace_from_donor": "TCQPA",
    "api.trace_from_lot": "TCQPA",
    "api.trace_from_recipient": "TCQPA",
    "api.trace_from_unit": "TCQPA",
    "api.trace_lot": "TCQPA",
    "api.training_matrix": "TCQPA",
    "api.training_person": "TCQPA",
    "api.training_requirements": "TCQPA",
    "api.unit_detail": "TCQPA",
    "api.unit_label": "TQ",
    "api.shipment_document": "TQ",
    "api.check_unit_label": "TQ",
    "api.unit_list": "TCQPA",
    "api.unit_requests": "TCQPA",
    "api.update_specification": "Q",
    "api.update_specification_test": "Q",
    "api.user": "any",
    "api.users": "QAD",
    "api.verify_result": "C",
    "api.verify_results": "C",
    "api.verify_step": "TQ",
    "api.verify_steps": "TQ",
    "api.vessel_types": "TCQPA",
    "api.void_equipment_event": "Q",
    "api.void_qualification": "TCQP",
    "api.void_training": "TCQP",
    "api.withdraw_consent": "T",
    "api.withdraw_sop_version": "TCQP",
    "audit.export_csv": "QPA",
    "audit.trail": "QPA",
    "auth.change_password": "any",
    "auth.choose_language": "any",
    "auth.login": "public",
    "auth.logout": "any",
    "batches.compare": "TCQPA",
    "batches.detail": "TCQPA",
    "batches.index": "TCQPA",
    "batches.start": "T",
    "batches.step": "T",
    "batches.transition": "TCQP",
    "batches.verify": "TQ",
    "batches.verify_selected": "TQ",
    "deviations.add_action": "Q",
    "deviations.carry_action": "Q",
    "deviations.close": "Q",
    "deviations.complete_action": "TCQP",
    "deviations.detail": "TCQPA",
    "deviations.index": "TCQPA",
    "deviations.investigate": "Q",
    "deviations.new": "TCQP",
    "documents.add_change_action": "Q",
    "documents.approve_change_qa": "Q",
    "documents.approve_change_qp": "P",
    "documents.approve_version": "Q",
    "documents.change": "TCQPA",
    "documents.changes": "TCQPA",
    "documents.close_change": "Q",
    "documents.complete_change_action": "TCQP",
    "documents.new_change": "TCQP",
    "documents.new_sop": "TCQP",
    "documents.new_version": "TCQP",
    "documents.reject_change": "QP",
    "documents.sop": "TCQPA",
    "documents.sops": "TCQPA",
    "documents.submit_change": "TCQP",
    "documents.version_pdf": "TCQPA",
    "documents.withdraw_version": "TCQP",
    "donors.add_panel": "T",
    "donors.add_result": "T",
    "donors.assessment": "Q",
    "donors.confirmatory": "Q",
    "donors.correct_result": "T",
    "donors.detail": "TCQPA",
    "donors.edit": "T",
    "donors.index": "TCQPA",
    "donors.new": "T",
    "donors.withdraw": "T",
    "dosing.allocate": "TQ",
    "dosing.cancel": "TQ",
    "dosing.detail": "TCQPA",
    "dosing.index": "TCQPA",
    "dosing.new": "TQ",
    "dosing.product": "Q",
    "dosing.products": "TCQPA",
    "dosing.release": "TQ",
    "environment.add_plan": "Q",
    "environment.batch": "TCQPA",
    "environment.declare_device": "Q",
    "environment.declare_point": "Q",
    "environment.declare_room": "Q",
    "environment.enter_results": "TQ",
    "environment.excursions": "TCQPA",
    "environment.index": "TCQPA",
    "environment.limits": "TCQPA",
    "environment.open_session": "TQ",
    "environment.point": "TCQPA",
    "environment.record_missing": "TQ",
    "environment.report": "TCQPA",
    "environment.review_excursion": "Q",
    "environment.session": "TCQPA",
    "environment.sessions": "TCQPA",
    "environment.set_alert_level": "Q",
    "equipment.calibration": "TQ",
    "equipment.certificate": "TCQPA",
    "equipment.detail": "TCQPA",
    "equipment.impact_deviation": "Q",
    "equipment.index": "TCQPA",
    "equipment.record_event": "TQ",
    "equipment.register": "TQ",
    "equipment.service_status": "TQ",
    "equipment.void_event": "Q",
    "main.dashboard": "any",
    "main.healthz": "public",
    "main.switch_site": "any",
    "materials.announce": "T",
    "materials.cancel_expected": "T",
    "materials.collection_facilities": "D",
    "materials.decide": "Q",
    "materials.detail": "TCQPA",
    "materials.expected": "TCQPA",
    "materials.index": "TCQPA",
    "materials.label": "TQ",
    "materials.receive": "T",
    "materials.retire_collection_facility": "D",
    "notifications.acknowledge": "QPD",
    "notifications.acknowledge_selected": "Q",
    "notifications.acknowledge_task": "TQP",
    "notifications.alerts": "QPD",
    "notifications.tasks": "TCQPA",
    # Prometheus metrics (issue 19): an administrator, or a scraper with the metrics token (no session).
    "operations.metrics": "D",
    "products.add_test": "Q",
    "products.approve": "Q",
    "products.cite_change_request": "Q",
    "products.detail": "TCQPA",
    "products.labelling": "TCQPA",
    "products.edit_draft": "Q",
    "products.edit_test": "Q",
    "products.index": "TCQPA",
    "products.new": "Q",
    "products.new_draft": "Q",
    "products.settings": "Q",
    "products.specification": "TCQPA",
    "qc.batch": "TCQPA",
    "qc.batch_worksheet": "C",
    "qc.enter": "C",
    "qc.final_read": "C",
    "qc.invalidate": "Q",
    "qc.judge_typed": "C",
    "qc.test_worksheet": "C",
    "qc.trends": "TCQPA",
    "qc.verify": "C",
    "qc.verify_selected": "C",
    "qc.worklist": "TCQPA",
    "reagents.add_item": "Q",
    "reagents.catalogue": "TCQPA",
    "reagents.lot": "TCQPA",
    "reagents.lots": "TCQPA",
    "reagents.receive": "TQ",
    "reagents.set_status": "Q",
    "reagents.trace": "TCQPA",
    "releases.certificate_pdf": "TCQPA",
    "releases.certification": "P",
    "releases.certification_worklist": "P",
    "releases.decide": "P",
    "releases.record_pdf": "TCQPA",
    "releases.register": "QPA",
    "releases.return_batch": "Q",
    "releases.review": "Q",
    "releases.review_worklist": "Q",
    "releases.verify_certificate": "public",
    "search.find": "TCQPA",
    "shipments.create": "T",
    "shipments.detail": "TCQPA",
    "shipments.index": "TCQPA",
    "shipments.temperature_log": "TCQPA",
    "shipments.receive": "T",
    "signatures.accept_accountability": "any",
    "signatures.account": "any",
    "signatures.accountability_pdf": "any",
    "signatures.create_token": "any",
    "signatures.revoke_token": "any",
    "storage.create_location": "TQ",
    "storage.index": "TCQPA",
    "storage.location": "TCQPA",
    "trace.donor": "TCQPA",
    "trace.donor_pdf": "TCQPA",
    "trace.lot": "TCQPA",
    "trace.lot_pdf": "TCQPA",
    "trace.recipient": "TCQPA",
    "trace.recipient_pdf": "TCQPA",
    "trace.search": "TCQPA",
    "trace.unit": "TCQPA",
    "trace.unit_pdf": "TCQPA",
    "training.index": "TCQPA",
    "training.matrix": "TCQPA",
    "training.person": "TCQPA",
    "training.record_qualification": "TCQP",
    "training.record_training": "TCQP",
    "training.requirements": "TCQPA",
    "training.set_grace": "Q",
    "training.set_requirement": "Q",
    "training.void_qualification": "TCQP",
    "training.void_training": "TCQP",
    "units.administer": "T",
    "units.batch": "TCQPA",
    "units.batch_labels": "TQ",
    "units.create": "T",
    "units.destroy": "TQ",
    "units.detail": "TCQPA",
    "units.index": "TCQPA",
    "units.label": "TQ",
    "units.label_zpl": "TQ",
    "shipments.document": "TQ",
    "units.label_page": "TQ",
    "units.label_check": "TQ",
    "units.lift_quarantine": "Q",
    "units.recall": "QP",
    "units.release": "QP",
    "units.release_reservation": "TQ",
    "units.requests": "TCQPA",
    "units.reserve": "TQ",
    "units.store": "TQ",
    "units.take_out": "TQ",
    "units.thaw": "T",
}


def expected(endpoint: str) -> str:
    return EXPECTED_ROLES[endpoint]


def expected_roles(endpoint: str) -> frozenset[Role] | str:
    letters = EXPECTED_ROLES[endpoint]
    if letters in ("any", "public"):
        return letters
    return frozenset(LETTERS[letter] for letter in letters)


def _routes(app: Flask):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        args = {name: 999_999 if isinstance(conv, NumberConverter) else "XX" for name, conv in rule._converters.items()}
        url = rule.build(args, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, url


def test_every_route_is_in_the_table_and_the_table_names_only_routes(app):
    endpoints = {endpoint for endpoint in app.view_functions if endpoint != "static"}
    assert sorted(endpoints - set(EXPECTED_ROLES)) == [], "add the new routes to EXPECTED_ROLES, by hand"
    assert sorted(set(EXPECTED_ROLES) - endpoints) == []


def test_the_views_grant_exactly_the_roles_of_the_table(app):
    wrong = {}
    for endpoint, view in app.view_functions.items():
        if endpoint == "static":
            continue
        wanted = expected_roles(endpoint)
        if getattr(view, "public", False):
            declared = "public"
        elif getattr(view, "allowed_roles", None) == ANY_ROLE:
            declared = "any"
        else:
            declared = frozenset(getattr(view, "allowed_roles", None) or ())
        if declared != wanted:
            wrong[endpoint] = (sorted(declared) if isinstance(declared, frozenset) else declared, wanted)
    assert wrong == {}


def test_every_view_declares_who_may_open_it(app):
    undeclared = []
    for endpoint, view in app.view_functions.items():
        if endpoint == "static" or getattr(view, "public", False) or endpoint == "api.openapi":
            continue
        if not getattr(view, "allowed_roles", None):
            undeclared.append(endpoint)
    assert undeclared == [], f"views without a role declaration (refused to everyone): {undeclared}"


def test_anonymous_is_refused_everywhere(app, client):
    checked = 0
    for endpoint, method, url in _routes(app):
        view = app.view_functions[endpoint]
        if getattr(view, "public", False) or endpoint == "api.openapi":
            continue
        response = client.open(url, method=method)
        if url.startswith("/api/"):
            assert response.status_code == 401, (endpoint, method, url, response.status_code)
            assert response.get_json()["error"]["code"] == "unauthenticated"
        else:
            assert response.status_code == 302, (endpoint, method, url, response.status_code)
            assert "/auth/login" in response.headers["Location"], (endpoint, url)
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("probe_role", PROBES)
def test_users_without_the_role_are_refused(app, client, users, probe_role):
    user = users[probe_role]
    assert login(client, user.username).status_code == 302
    refused = 0
    for endpoint, method, url in _routes(app):
        if url.startswith("/api/") or endpoint in ("auth.logout",):
            continue
        allowed = expected_roles(endpoint)
        if allowed in ("public", "any"):
            continue
        response = client.open(url, method=method)
        if Role(probe_role) in allowed:
            assert response.status_code != 403, (probe_role, endpoint, method, url)
            continue
        assert response.status_code == 403, (probe_role, endpoint, method, url, response.status_code)
        refused += 1
    assert refused > 0


@pytest.mark.parametrize("probe_role", PROBES)
def test_api_tokens_without_the_role_are_refused(app, client, users, probe_role):
    from cellfactory.auth import services as auth_services

    user = users[probe_role]
    token = auth_services.create_token(user, user, "access probe")
    refused = 0
    for endpoint, method, url in _routes(app):
        if not url.startswith("/api/"):
            continue
        allowed = expected_roles(endpoint)
        if allowed in ("public", "any") or Role(probe_role) in allowed:
            continue
        response = client.open(url, method=method, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, (probe_role, endpoint, method, url, response.status_code)
        assert response.get_json()["error"]["code"] == "forbidden"
        refused += 1
    assert refused > 0


def test_refusal_is_audited(client, users):
    import sqlalchemy as sa

    from cellfactory.audit.models import AuditEntry
    from cellfactory.extensions import db

    login(client, "technician.bg")
    assert client.get("/admin/users").status_code == 403
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "access_denied")
                               .order_by(AuditEntry.seq.desc())).first()
    assert entry is not None
    assert entry.actor_name.startswith("technician.bg")
    assert entry.changes["attempted"] == "admin.users"
