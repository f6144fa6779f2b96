"""All settings of the service, in one pydantic-settings class (environment prefix ``UNLEARN_``)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UNLEARN_", env_file=None, extra="ignore")

    # Embedded defaults: everything lives under data_dir, nothing to install.
    data_dir: Path = Path("var")
    database_url: str = ""  # default: sqlite:///{data_dir}/unlearn.db
    broker_url: str = ""  # default: an embedded filesystem broker under {data_dir}/broker
    # The embedded broker polls its folder; kombu's default (1 s) was most of a job's queue wait.
    embedded_broker_polling_seconds: float = Field(default=0.2, gt=0, le=10)
    storage_url: str = ""  # any fsspec URL; default: {data_dir}/artifacts

    admin_key: str | None = None  # created with every scope on start if no key exists yet
    # Keys the digests shown outside the database (service/privacy.py); embedded: made on first start.
    secret_key: SecretStr | None = None
    admin_tenant: str = "default"

    max_body_bytes: int = 256 * 1024 * 1024
    # Directories whose config.json an hf-* architecture may name in config.path. Empty (the
    # default): none, so no API caller can make the service read server files; configs come inline
    # (config.hf_config). UNLEARN_HF_CONFIG_DIRS: directories separated by os.pathsep, or JSON.
    hf_config_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    max_inline_samples: int = 10_000
    max_forget_samples: int = 100_000
    max_bulk_requests: int = Field(default=1000, ge=1)  # deletion requests per bulk call

    # Training data sets (service/datasets). An upload is streamed into shards of
    # dataset_shard_samples rows: erasing a few samples rewrites only the shards that hold them.
    dataset_max_samples: int = Field(default=10_000_000, ge=1)  # per version, from the headers
    dataset_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)  # upload, and an .npz inflated
    dataset_shard_samples: int = Field(default=1024, ge=1, le=1_000_000)
    training_max_samples: int = Field(default=1_000_000, ge=1)  # a training job's set, in memory
    dataset_retain_max_samples: int = Field(default=10_000, ge=1)  # bound of a retain_sample subset

    # Jobs
    job_lease_seconds: float = 60.0
    job_heartbeat_seconds: float = 10.0
    job_max_attempts: int = 3
    job_soft_time_limit: int = 3600
    job_time_limit: int = 3900
    reconcile_interval_seconds: float = 15.0
    reconcile_stale_outbox_seconds: float = 30.0
    forget_set_retention_seconds: float = 0.0
    # How long the forget set of a request whose job failed the acceptance policy is kept, so the
    # caller can retry it with other params or policy without uploading it again (0: purged at
    # once, like the forget sets of requests that failed otherwise). Requests by reference keep
    # nothing: their samples are read again from the registered training set.
    failed_forget_set_retention_seconds: float = Field(default=24 * 3600.0, ge=0)
    # After an erasure: how long retired checkpoints are kept (an owner's rollback window) and how
    # long data-set versions that still hold erased samples are (0: gone at once).
    retired_checkpoint_grace_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    erased_data_grace_seconds: float = Field(default=0.0, ge=0)
    # ga, not imu: under the anchored preset imu drops the forget samples of non-negative influence
    # (whole-class deletions stall: digits class 5 at forget accuracy 0.14-0.25 after 450 steps,
    # ga reaches 0 in 45-213), and ga measured better everywhere (docs/methods.md).
    default_method: str = "ga"
    # Where the model's training data is registered and a request names its samples.
    default_retain_method: str = "neggrad_plus"  # chosen by measurement: benchmarks/retain_selection.py
    device: str = "auto"
    torch_threads: int | None = Field(default=None, ge=1)  # None: torch's default (all cores)

    # Sharing the workers between tenants (service/jobs/fairness.py, service/deletions/limits.py).
    tenant_max_running_jobs: int = Field(default=2, ge=1)
    tenant_max_queued_samples: int = Field(default=1_000_000, ge=1)
    # Wall-clock budget of one run of a job; past it the engine stops at its next step.
    job_time_budget_seconds: float = Field(default=1800.0, gt=0)
    # Upper bounds on numeric method params, whichever method has them (operators tighten these).
    method_param_bounds: dict[str, float] = Field(
        default_factory=lambda: {
            "epochs": 1000.0,
            "max_epochs": 1000.0,
            "batch_size": 65536.0,
            "steps": 10000.0,
        }
    )

    # Acceptance policy: this service's values where they differ from the policy's own defaults,
    # which live once, in service/jobs/policy.py (None: the policy's default). Per-request
    # overrides of the utility budget are bounded by the *_limit value.
    policy_max_eval_accuracy_drop: float | None = Field(default=None, ge=0, le=1)
    policy_max_eval_accuracy_drop_limit: float = 0.5
    policy_require_forgetting: bool | None = None
    # Reject a job whose forget set looks far *less* familiar than unseen data (two-sided MIA,
    # service/jobs/policy.py). Off by default: the flag and the check are always recorded, but the
    # retain-aware default (neggrad_plus) over-forgets small forget sets (10 samples: AUC 0.27
    # against a sized limit of 0.31, tests/jobs/test_erasure.py), so enforcing it is the operator's
    # (or the request's) choice.
    policy_reject_over_forgetting: bool | None = None
    # Per-example membership testing (service/references, docs/methods.md "Reference models"):
    # how many reference models a model's reference set has unless the request says (0: off: no
    # set is built and no job is tested), and the most a request may ask for.
    reference_models: int = Field(default=0, ge=0, le=256)
    reference_models_max: int = Field(default=32, ge=2, le=256)

    log_json: bool = True
    log_level: str = "INFO"
    run_reconciler_in_api: bool = True

    # Signatures (service/certificates): the Ed25519 private key as PEM, or a file holding it.
    # Neither (the embedded mode): one is made on first start in {data_dir}/signing-key.pem, 0600.
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    # How often the API signs the head of every audit chain (0: never). A chain cut below its
    # last signed head fails verification, so this bounds how many events can vanish unnoticed.
    audit_sign_interval_seconds: float = Field(default=60.0, ge=0)

    worker_concurrency: int = Field(default=1, ge=1)

    # Webhooks (service/webhooks, docs/webhooks.md). Destinations resolving to loopback, private,
    # link-local, multicast, reserved or unspecified addresses are refused (SSRF) unless listed
    # here: IPs, CIDRs or host names, comma-separated or JSON (UNLEARN_WEBHOOK_ALLOWED_HOSTS).
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # False: only the destinations listed above, public ones included.
    webhook_allow_public_destinations: bool = True
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_seconds: float = Field(default=10.0, gt=0)  # before the 2nd attempt; doubles
    webhook_backoff_max_seconds: float = Field(default=6 * 3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)  # each network operation
    webhook_max_response_bytes: int = Field(default=64 * 1024, ge=0)  # read from an answer, at most
    webhook_max_per_tenant: int = Field(default=50, ge=1)
    # The API's delivery thread runs beside its reconciler thread (run_reconciler_in_api) unless
    # this is false; reconcile_once delivers too.
    webhook_delivery_in_api: bool = True
    webhook_poll_seconds: float = Field(default=2.0, gt=0)
    webhook_batch_size: int = Field(default=50, ge=1)  # deliveries claimed per pass
    webhook_concurrency: int = Field(default=4, ge=1, le=64)  # sends in flight per process

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("hf_config_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'unlearn.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or str((self.data_dir / "artifacts").resolve())

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def is_embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
