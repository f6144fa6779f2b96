"""Typed answers of the API (pydantic). Field names follow the service's OpenAPI schemas; a test
builds the service's OpenAPI and checks every field here against it, so the two cannot drift.

Members the server adds later are kept (``extra="allow"``), so an older SDK still parses a newer
server's answers and ``model_dump()`` shows everything the server sent.
"""

from unlearn_client.models.audit import (
    AuditEvent,
    ChainStatus,
    ChainVerification,
    PublicKey,
    SignedDocument,
    SignedHead,
)
from unlearn_client.models.base import ApiModel, Page
from unlearn_client.models.datasets import (
    Dataset,
    DatasetColumn,
    DatasetErasure,
    DatasetUpload,
    DatasetVersion,
    Erasure,
    ErasureRequest,
)
from unlearn_client.models.deletions import BulkDeletion, DeletionRequest, Receipt, SampleDigests, Stage
from unlearn_client.models.health import Health, Readiness
from unlearn_client.models.jobs import Job
from unlearn_client.models.keys import ApiKey, CreatedApiKey
from unlearn_client.models.registry import CheckpointInfo, EvalSet, Exactness, Model, TrainingData, Version
from unlearn_client.models.states import TERMINAL_JOB_STATUSES, TERMINAL_REQUEST_STATUSES
from unlearn_client.models.webhooks import CreatedWebhook, Delivery, Webhook

__all__ = [
    "TERMINAL_JOB_STATUSES",
    "TERMINAL_REQUEST_STATUSES",
    "ApiKey",
    "ApiModel",
    "AuditEvent",
    "BulkDeletion",
    "ChainStatus",
    "ChainVerification",
    "CheckpointInfo",
    "CreatedApiKey",
    "CreatedWebhook",
    "Dataset",
    "DatasetColumn",
    "DatasetErasure",
    "DatasetUpload",
    "DatasetVersion",
    "DeletionRequest",
    "Delivery",
    "Erasure",
    "ErasureRequest",
    "EvalSet",
    "Exactness",
    "Health",
    "Job",
    "Model",
    "Page",
    "PublicKey",
    "Readiness",
    "Receipt",
    "SampleDigests",
    "SignedDocument",
    "SignedHead",
    "Stage",
    "TrainingData",
    "Version",
    "Webhook",
]
