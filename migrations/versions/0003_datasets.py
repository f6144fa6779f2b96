"""training data sets: datasets, their versions, shards and the sample index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:00:00

Written from service/tables.py (Dataset, DatasetVersion, DatasetShard, DatasetSample) in the
shape autogenerate gives, and checked against it by tests/service/test_migrations.py. No data
moves: the tables are new.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=True),
        sa.Column("created_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_datasets_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_datasets_tenant_id_name")),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_datasets_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("parent_version", sa.Integer(), nullable=True),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("n_shards", sa.Integer(), nullable=False),
        sa.Column("shard_samples", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("data_sha256", sa.String(length=64), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("sample_id_kind", sa.String(length=8), nullable=False),
        sa.Column("n_subjects", sa.Integer(), nullable=False),
        sa.Column("subject_key_id", sa.String(length=16), nullable=True),
        sa.Column("upload_format", sa.String(length=16), nullable=True),
        sa.Column("upload_sha256", sa.String(length=64), nullable=True),
        sa.Column("erased_samples", sa.Integer(), nullable=True),
        sa.Column("shards_rewritten", sa.Integer(), nullable=True),
        sa.Column("bytes_rewritten", sa.BigInteger(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", service.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_versions_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint("dataset_id", "version", name=op.f("uq_dataset_versions_dataset_id_version")),
    )
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_versions_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "dataset_shards",
        sa.Column("dataset_version_id", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("storage_key", sa.String(length=400), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_shards_dataset_version_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("dataset_version_id", "shard", name=op.f("pk_dataset_shards")),
    )
    with op.batch_alter_table("dataset_shards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_shards_storage_key"), ["storage_key"], unique=False)

    op.create_table(
        "dataset_samples",
        sa.Column("dataset_version_id", sa.String(length=64), nullable=False),
        sa.Column("sample_id", sa.String(length=200), nullable=False),
        sa.Column("subject_digest", sa.String(length=64), nullable=True),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("shard_row", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_samples_dataset_version_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("dataset_version_id", "sample_id", name=op.f("pk_dataset_samples")),
        sa.UniqueConstraint(
            "dataset_version_id",
            "shard",
            "shard_row",
            name=op.f("uq_dataset_samples_dataset_version_id_shard_shard_row"),
        ),
    )
    with op.batch_alter_table("dataset_samples", schema=None) as batch_op:
        batch_op.create_index("ix_dataset_samples_subject", ["subject_digest", "dataset_version_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dataset_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_dataset_samples_subject")
    op.drop_table("dataset_samples")
    with op.batch_alter_table("dataset_shards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_shards_storage_key"))
    op.drop_table("dataset_shards")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_versions_dataset_id"))
    op.drop_table("dataset_versions")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_tenant_id"))
    op.drop_table("datasets")
