"""Pure PyTorch unlearning engine: architectures, checkpoints, data, influence, methods, verification.

No FastAPI, Celery or database imports here: this package runs alone on a GPU machine
and from the command line (``unlearn --help``).
"""

from unlearning.architectures import (
    ModelSpec,
    build_model,
    list_architectures,
    register_architecture,
)
from unlearning.checkpoints import (
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
    sha256_bytes,
    state_dict_bytes,
)
from unlearning.data import load_dataset, sample_digests, save_dataset, validate_dataset
from unlearning.errors import (
    ArchitectureError,
    CancelledError,
    CheckpointError,
    DataError,
    DivergedError,
    InvalidInputError,
    ParamsError,
    UnlearningError,
)
from unlearning.methods import get_method, list_methods, unlearn
from unlearning.report import UnlearnReport
from unlearning.types import Dataset, UnlearnResult
from unlearning.verification import evaluate, mia_auc

__all__ = [
    "ArchitectureError",
    "CancelledError",
    "CheckpointError",
    "DataError",
    "Dataset",
    "DivergedError",
    "InvalidInputError",
    "ModelSpec",
    "ParamsError",
    "UnlearnReport",
    "UnlearnResult",
    "UnlearningError",
    "build_model",
    "evaluate",
    "get_method",
    "list_architectures",
    "list_methods",
    "load_checkpoint",
    "load_dataset",
    "mia_auc",
    "read_state_dict",
    "register_architecture",
    "sample_digests",
    "save_checkpoint",
    "save_dataset",
    "sha256_bytes",
    "state_dict_bytes",
    "unlearn",
    "validate_dataset",
]
