"""The output shape of an electronic signature in the API: what every signed record shows of its signatures."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cellfactory.api.contract import Moment, Output
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Signature


class SignatureOut(Output):
    meaning: str = Field(description="What the signature means, as printed")
    printed_name: str
    username: str
    signed_at: Moment
    entity_type: str
    entity_id: str
    record_version: int
    content_sha256: str = Field(description="SHA-256 of the canonical JSON of the content signed")
    comment: str | None
    status: str | None = Field(description="Whether the signed content still matches the record (valid, ...)")

    @classmethod
    def of(cls, signature: Signature, status: str | None = None) -> SignatureOut:
        return cls(meaning=signature.meaning, printed_name=signature.printed_name,
                   username=signature.signer_username, signed_at=signature.signed_at,
                   entity_type=signature.entity_type, entity_id=signature.entity_id,
                   record_version=signature.record_version, content_sha256=signature.content_hash,
                   comment=signature.comment, status=status)

    @classmethod
    def all_of(cls, record: Any) -> list[SignatureOut]:
        """Every signature of `record`, each with whether it still matches the record."""
        return [cls.of(signature, signature_services.verify(signature, record).value)
                for signature in signature_services.signatures_for(record)]
