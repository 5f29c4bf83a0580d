"""Every model, imported once so that the metadata (and Alembic) sees the whole schema."""

from cellfactory.alerts.models import Alert
from cellfactory.audit.models import AuditChainSeal, AuditEntry
from cellfactory.auth.models import ApiToken, PasswordHistory, RoleAssignment, User
from cellfactory.batches.models import (
    Batch,
    BatchMaterial,
    BatchSequence,
    BatchStep,
    Passage,
    StepEquipment,
    StepReagent,
    VesselType,
)
from cellfactory.biovigilance.models import AdverseReport, AdverseReportFollowUp, AdverseReportSequence
from cellfactory.core.db import Base
from cellfactory.deviations.models import CapaAction, Deviation, DeviationSequence
from cellfactory.documents.models import (
    ChangeAction,
    ChangeRequest,
    ChangeRequestSequence,
    Sop,
    SopVersion,
    change_request_product,
)
from cellfactory.donors.models import Donor, ScreeningResultRecord
from cellfactory.dosing.models import DoseAllocation, DosingProfile, Prescription
from cellfactory.environment.models import (
    AlertLevel,
    Device,
    Excursion,
    MissingSample,
    MonitoringResult,
    MonitoringSession,
    Room,
    SamplingPlan,
    SamplingPoint,
    SessionSequence,
)
from cellfactory.equipment.models import Equipment
from cellfactory.materials.models import CollectionFacility, DinSequence, MaterialTypeRule, SourceMaterial
from cellfactory.notifications.models import NotificationTask, TaskAcknowledgement
from cellfactory.products.models import Product, SpecificationVersion, SpecTest
from cellfactory.qc.models import QcResult
from cellfactory.reagents.models import CatalogueItem, ReagentLot
from cellfactory.recalls.models import Recall, RecallNotice, RecallSequence, RecallUnit
from cellfactory.releases.models import BatchDecision, Certificate
from cellfactory.signatures.models import EsigAcknowledgement, IdentityVerification, Signature
from cellfactory.sites.models import Site
from cellfactory.training.models import Qualification, TrainingRecord, TrainingRequirement
from cellfactory.units.models import (
    Recipient,
    Shipment,
    ShipmentSequence,
    ShipmentUnit,
    StorageLocation,
    Unit,
)

metadata = Base.metadata

__all__ = [
    "AdverseReport", "AdverseReportFollowUp", "AdverseReportSequence",
    "AlertLevel", "Device", "Excursion", "MissingSample", "MonitoringResult", "MonitoringSession", "Room",
    "SamplingPlan", "SamplingPoint", "SessionSequence",
    "Recipient", "Shipment", "ShipmentSequence", "ShipmentUnit", "StorageLocation", "Unit",
    "BatchDecision", "Certificate",
    "CapaAction", "Deviation", "DeviationSequence", "QcResult",
    "ChangeAction", "ChangeRequest", "ChangeRequestSequence", "Sop", "SopVersion", "change_request_product",
    "Batch", "BatchMaterial", "BatchSequence", "BatchStep", "CatalogueItem", "Equipment", "Passage", "Product",
    "ReagentLot", "SpecTest", "SpecificationVersion", "StepEquipment", "StepReagent", "VesselType",
    "NotificationTask", "TaskAcknowledgement",
    "Alert", "ApiToken", "AuditChainSeal", "AuditEntry", "DinSequence", "Donor", "EsigAcknowledgement",
    "IdentityVerification",
    "MaterialTypeRule", "PasswordHistory", "RoleAssignment", "ScreeningResultRecord", "Signature", "Site",
    "CollectionFacility", "SourceMaterial", "User", "metadata",
    "Qualification", "TrainingRecord", "TrainingRequirement",
    "DoseAllocation", "DosingProfile", "Prescription",
    "Recall", "RecallNotice", "RecallSequence", "RecallUnit",
]
