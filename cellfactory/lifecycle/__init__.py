"""The batch life cycle: what spans the domains a batch passes through.

A batch moves along its state machine (`batches.services.TRANSITIONS`) under guards kept by the domains above it
(the manufacturing record, QC, the QP's decision table in `releases`), and each move acts on them: a decision is
recorded and its certificate issued, units are recalled or unblocked. Those moves, the follow-up of a signature on
the batch's record that no longer holds, and a deviation opened against a batch live here, above every domain they
span; the domains never import this package (the import-linter contracts in pyproject.toml say so).

Importing this package passes the readers of a batch's QC results and deviations down to `batches.models`, which
imports no service (see `batches.models.RecordReaders`); `create_app` imports it.
"""

from __future__ import annotations

from cellfactory.batches.models import record_readers
from cellfactory.deviations.services import for_batch
from cellfactory.lifecycle import environment as _environment  # noqa: F401 - passes the batches of a session down
from cellfactory.qc.services import batch_results

record_readers.results = batch_results
record_readers.deviations = lambda batch: for_batch(batch.id, details=False)
