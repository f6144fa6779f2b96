"""The API's operations grouped as the client exposes them (``client.models.create`` ...).

Each line binds one flow; the same class serves the sync and the async client.
"""

from __future__ import annotations

from unlearn_client.operation import Iteration, Operation, R, Resource
from unlearn_client.ops import audit as audit_ops
from unlearn_client.ops import datasets as dataset_ops
from unlearn_client.ops import deletions as deletion_ops
from unlearn_client.ops import download as download_ops
from unlearn_client.ops import erasures as erasure_ops
from unlearn_client.ops import follow as follow_ops
from unlearn_client.ops import health as health_ops
from unlearn_client.ops import jobs as job_ops
from unlearn_client.ops import keys as key_ops
from unlearn_client.ops import models as model_ops
from unlearn_client.ops import versions as version_ops
from unlearn_client.ops import webhooks as webhook_ops


class Models(Resource[R]):
    """Registered models."""

    create = Operation(model_ops.create)
    list = Operation(model_ops.list_page)
    iterate = Iteration(model_ops.iterate)
    get = Operation(model_ops.get)
    update = Operation(model_ops.update)


class Versions(Resource[R]):
    """A model's versions and their checkpoints."""

    upload = Operation(version_ops.upload)
    list = Operation(version_ops.list_page)
    iterate = Iteration(version_ops.iterate)
    get = Operation(version_ops.get)
    checkpoint_info = Operation(version_ops.checkpoint_info)
    download = Operation(download_ops.download)
    retire = Operation(version_ops.retire)
    rollback = Operation(version_ops.rollback)


class DeletionRequests(Resource[R]):
    """Erasure requests: what to forget, and their outcome."""

    submit = Operation(deletion_ops.submit)
    submit_bulk = Operation(deletion_ops.submit_bulk)
    retry = Operation(deletion_ops.retry)
    list = Operation(deletion_ops.list_page)
    iterate = Iteration(deletion_ops.iterate)
    get = Operation(deletion_ops.get)
    sample_digests = Operation(deletion_ops.sample_digests)
    receipt = Operation(deletion_ops.receipt)
    signed_receipt = Operation(deletion_ops.signed_receipt)
    certificate = Operation(deletion_ops.certificate)
    wait = Operation(follow_ops.wait_request)


class Datasets(Resource[R]):
    """Registered training sets, and erasing a data subject from them and their models."""

    create = Operation(dataset_ops.create)
    list = Operation(dataset_ops.list_page)
    iterate = Iteration(dataset_ops.iterate)
    get = Operation(dataset_ops.get)
    upload = Operation(dataset_ops.upload)
    list_versions = Operation(dataset_ops.list_versions)
    iterate_versions = Iteration(dataset_ops.iterate_versions)
    get_version = Operation(dataset_ops.get_version)
    erase = Operation(dataset_ops.erase)


class Erasures(Resource[R]):
    """Erasures of data subjects (one deletion request per model trained on the data)."""

    list = Operation(erasure_ops.list_page)
    iterate = Iteration(erasure_ops.iterate)
    get = Operation(erasure_ops.get)
    receipt = Operation(erasure_ops.receipt)
    signed_receipt = Operation(erasure_ops.signed_receipt)
    wait = Operation(erasure_ops.wait)


class Jobs(Resource[R]):
    """Jobs: unlearning (batches of deletion requests) and training."""

    list = Operation(job_ops.list_page)
    iterate = Iteration(job_ops.iterate)
    get = Operation(job_ops.get)
    cancel = Operation(job_ops.cancel)
    train = Operation(job_ops.train)
    events = Iteration(follow_ops.events)
    wait = Operation(follow_ops.wait_job)


class Audit(Resource[R]):
    """The hash-chained audit log."""

    list = Operation(audit_ops.list_page)
    iterate = Iteration(audit_ops.iterate)
    verify = Operation(audit_ops.verify)
    checkpoints = Operation(audit_ops.checkpoints_page)
    iterate_checkpoints = Iteration(audit_ops.iterate_checkpoints)
    chains = Operation(audit_ops.chains_page)
    iterate_chains = Iteration(audit_ops.iterate_chains)


class Keys(Resource[R]):
    """API keys (admin scope)."""

    create = Operation(key_ops.create)
    list = Operation(key_ops.list_page)
    iterate = Iteration(key_ops.iterate)
    revoke = Operation(key_ops.revoke)


class Webhooks(Resource[R]):
    """Callback URLs the service POSTs events to, and their deliveries."""

    create = Operation(webhook_ops.create)
    list = Operation(webhook_ops.list_page)
    iterate = Iteration(webhook_ops.iterate)
    get = Operation(webhook_ops.get)
    delete = Operation(webhook_ops.delete)
    list_deliveries = Operation(webhook_ops.list_deliveries)
    iterate_deliveries = Iteration(webhook_ops.iterate_deliveries)
    get_delivery = Operation(webhook_ops.get_delivery)
    retry_delivery = Operation(webhook_ops.retry_delivery)


class Api(Resource[R]):
    """The whole API: the resources, and the operations used most at the top."""

    health = Operation(health_ops.health)
    ready = Operation(health_ops.ready)
    metrics = Operation(health_ops.metrics)
    signing_key = Operation(health_ops.signing_key)
    wait = Operation(follow_ops.wait)
    download = Operation(download_ops.download)

    def __init__(self, runner: R) -> None:
        super().__init__(runner)
        self.models: Models[R] = Models(runner)
        self.versions: Versions[R] = Versions(runner)
        self.deletions: DeletionRequests[R] = DeletionRequests(runner)
        self.datasets: Datasets[R] = Datasets(runner)
        self.erasures: Erasures[R] = Erasures(runner)
        self.jobs: Jobs[R] = Jobs(runner)
        self.audit: Audit[R] = Audit(runner)
        self.keys: Keys[R] = Keys(runner)
        self.webhooks: Webhooks[R] = Webhooks(runner)
