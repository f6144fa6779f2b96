"""Data sets: formats, refusal of pickles, validation against a model, per-sample digests."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

from unlearning.architectures import ModelSpec, architecture_spec, build_model
from unlearning.data import (
    dataset_bytes,
    load_dataset,
    sample_digests,
    save_dataset,
    validate_dataset,
)
from unlearning.errors import DataError
from unlearning.samples import concat_datasets, infer_task, num_samples, take

MLP = {"name": "mlp", "config": {"input_dim": 4, "hidden_dims": [8], "num_classes": 3}}
LENET = {"name": "lenet", "config": {"in_channels": 1, "image_size": 8, "num_classes": 10}}
LM = {
    "name": "tiny-transformer",
    "config": {"vocab_size": 20, "max_len": 6, "d_model": 8, "n_layers": 1, "n_heads": 2},
}


def _classification(n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"inputs": torch.randn(n, 4, generator=g), "labels": torch.arange(n) % 3}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# --- formats -------------------------------------------------------------------------------


def test_formats_round_trip_to_the_same_tensors_and_digests(tmp_path: Path) -> None:
    data = _classification()
    st_path, npz_path = tmp_path / "f.safetensors", tmp_path / "f.npz"
    save_dataset(data, st_path)
    np.savez(npz_path, inputs=data["inputs"].numpy(), labels=data["labels"].numpy())
    as_json = {"inputs": data["inputs"].tolist(), "labels": data["labels"].tolist()}
    # npz and JSON arrive as float64 / int64 numpy; validation normalises them.
    sources: list[Any] = [
        data,
        st_path,
        str(st_path),
        st_path.read_bytes(),
        dataset_bytes(data),
        npz_path,
        npz_path.read_bytes(),
        as_json,
    ]
    reference = validate_dataset(data, MLP)
    digests = sample_digests(reference)
    for source in sources:
        normalised = validate_dataset(load_dataset(source), MLP)
        _assert_same(normalised, reference)
        assert sample_digests(normalised) == digests


def test_npz_file_without_npz_extension_is_sniffed(tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    with path.open("wb") as fh:
        np.savez(fh, input_ids=np.array([[1, 2, 3]], dtype=np.int32))
    loaded = load_dataset(path)
    assert loaded["input_ids"].dtype == torch.int32
    assert validate_dataset(loaded, LM)["input_ids"].dtype == torch.int64


def test_npz_object_array_rejected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, inputs=np.array([np.zeros(2), np.zeros(3)], dtype=object), labels=np.array([0, 1]))
    with pytest.raises(DataError, match="unpickling"):
        load_dataset(buf.getvalue())


class _Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (Path(self.path), "unpickled!"))


def test_pickle_rejected_without_unpickling(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    blob = pickle.dumps({"inputs": _Canary(str(canary))})
    with pytest.raises(DataError, match="pickle files are not accepted"):
        load_dataset(blob)
    path = tmp_path / "data.npz"  # lying extension
    path.write_bytes(blob)
    with pytest.raises(DataError, match="pickle files are not accepted"):
        load_dataset(path)
    assert not canary.exists()


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ({"inputs": [[1.0]], "labels": [0], "weights": [1.0]}, "unknown keys \\['weights'\\]"),
        ({"inputs": [[1.0], [2.0, 3.0]], "labels": [0, 1]}, "'inputs'"),
        ({"inputs": np.array(["a", "b"]), "labels": [0, 1]}, "strings"),
        ({}, "no arrays"),
        (b"not a data set at all....", "not safetensors"),
        (np.lib.format.MAGIC_PREFIX + b"\x01\x00rest", "single .npy"),
        (b"PK\x03\x04broken zip", "not a valid .npz"),
    ],
)
def test_load_dataset_rejects(source: Any, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        load_dataset(source)


def test_npz_float128_rejected_as_a_data_error() -> None:
    # torch has no float128: from_numpy used to raise a TypeError (a 500 on an eval-set upload)
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is float64 on this platform")
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((2, 4), dtype=np.longdouble), labels=np.array([0, 1]))
    with pytest.raises(DataError, match="'inputs': unsupported dtype float128"):
        load_dataset(buf.getvalue())


def test_uint_tensors_become_int64_like_uint_arrays() -> None:
    blob = safetensors.torch.save(
        {"inputs": torch.zeros(2, 4), "labels": torch.tensor([0, 2], dtype=torch.uint32)}
    )
    assert load_dataset(blob)["labels"].dtype == torch.int64
    assert validate_dataset(blob, MLP)["labels"].tolist() == [0, 2]


def test_npz_with_positional_arrays_names_the_keys() -> None:
    buf = io.BytesIO()
    np.savez(buf, np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(DataError, match="arr_0"):
        load_dataset(buf.getvalue())


# --- validation ----------------------------------------------------------------------------


def test_validate_normalises_dtypes() -> None:
    out = validate_dataset(
        {"inputs": np.arange(8, dtype=np.int16).reshape(2, 4), "labels": np.array([1.0, 2.0])}, MLP
    )
    assert out["inputs"].dtype == torch.float32
    assert out["labels"].dtype == torch.int64
    assert out["labels"].tolist() == [1, 2]


def test_validate_against_model_spec_and_mapping_alike() -> None:
    data = _classification()
    model = build_model(MLP)
    _assert_same(validate_dataset(data, model), validate_dataset(data, architecture_spec(MLP)))


def test_images_and_wildcard_sizes() -> None:
    x = torch.rand(3, 1, 8, 8)
    assert validate_dataset({"inputs": x, "labels": [0, 1, 2]}, LENET)["inputs"].shape == (3, 1, 8, 8)
    resnet = {"name": "resnet18", "config": {"in_channels": 1, "num_classes": 4}}
    out = validate_dataset({"inputs": torch.rand(2, 1, 12, 12), "labels": [0, 3]}, resnet)
    assert out["inputs"].shape == (2, 1, 12, 12)
    # a wildcard size is any size but 0: an image without pixels used to pass and crash the worker
    with pytest.raises(DataError, match=r"expected per-sample shape \(1, \*, \*\)"):
        validate_dataset({"inputs": torch.rand(2, 1, 0, 12), "labels": [0, 3]}, resnet)
    resnet["config"] = {"in_channels": 3, "num_classes": 4}
    with pytest.raises(DataError, match=r"expected per-sample shape \(3, \*, \*\)"):
        validate_dataset({"inputs": torch.rand(2, 1, 12, 12), "labels": [0, 3]}, resnet)


def test_token_classification_takes_input_ids_as_inputs() -> None:
    spec = ModelSpec("seq-cls", {}, "classification", "tokens", None, num_classes=3, max_len=8, vocab_size=50)
    out = validate_dataset({"input_ids": [[4, 5, 0]], "labels": [2], "attention_mask": [[1, 1, 0]]}, spec)
    assert sorted(out) == ["attention_mask", "inputs", "labels"]
    assert out["inputs"].tolist() == [[4, 5, 0]]
    with pytest.raises(DataError, match=r"token ids must be in \[0, 50\)"):
        validate_dataset({"inputs": [[50]], "labels": [0]}, spec)
    with pytest.raises(DataError, match="not both"):
        validate_dataset({"inputs": [[1]], "input_ids": [[1]], "labels": [0]}, spec)


CLS_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"inputs": torch.zeros(2, 4)}, r"missing \['labels'\]"),
    ({"input_ids": torch.zeros(2, 4, dtype=torch.long), "labels": [0, 1]}, r"missing \['inputs'\]"),
    ({"inputs": torch.zeros(2, 4), "labels": [0, 1], "attention_mask": torch.ones(2, 4)}, "unexpected"),
    ({"inputs": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}, "empty"),
    ({"inputs": torch.zeros(3, 4), "labels": [0, 1]}, "inputs has 3, labels has 2"),
    (
        {"inputs": torch.zeros(2, 5), "labels": [0, 1]},
        r"expected per-sample shape \(4,\) for 'mlp', got \(5,\)",
    ),
    (
        {"inputs": torch.zeros(2, 2, 2), "labels": [0, 1]},
        r"got \(2, 2\) \(same number of values: reshape to \[N, 4\]\)",
    ),
    ({"inputs": torch.zeros(2, 4), "labels": [0.0, 1.5]}, "integer class indices; sample 1 has 1.5"),
    ({"inputs": torch.zeros(2, 4), "labels": [[0], [1]]}, r"labels: expected shape \[N\]"),
    (
        {"inputs": torch.tensor([[0.0] * 4, [0, float("nan"), 0, 0]]), "labels": [0, 1]},
        "NaN or Inf .* first at sample 1",
    ),
    ({"inputs": torch.tensor([[float("inf")] * 4, [0.0] * 4]), "labels": [0, 1]}, "first at sample 0"),
    ({"inputs": torch.zeros(2, 4), "labels": [0, 3]}, r"labels must be in \[0, 3\); sample 1 has 3"),
    ({"inputs": torch.zeros(2, 4), "labels": [-1, 0]}, "sample 0 has -1"),
    ({"inputs": torch.zeros(2, 4), "labels": 1}, "scalar"),
    # Range checked before the int64 cast: these used to be reported as -9223372036854775808.
    ({"inputs": torch.zeros(2, 4), "labels": [0.0, 1e30]}, "sample 1 has 1000000000000000019884624838656"),
    ({"inputs": torch.zeros(2, 4), "labels": [0, 2**64 - 1]}, "sample 1 has 18446744073709551616"),
    ({"inputs": torch.zeros(2, 4), "labels": torch.tensor([0, 2**63], dtype=torch.uint64)}, "too large"),
    # Complex tensors lose their imaginary part in a cast: refused from a mapping and from safetensors.
    ({"inputs": torch.zeros(2, 4, dtype=torch.complex64), "labels": [0, 1]}, "complex"),
    (
        safetensors.torch.save(
            {"inputs": torch.zeros(2, 4, dtype=torch.complex64), "labels": torch.tensor([0, 1])}
        ),
        "'inputs': complex numbers are not accepted",
    ),
    (
        safetensors.torch.save(
            {"inputs": torch.zeros(2, 4), "labels": torch.tensor([0, 1], dtype=torch.complex64)}
        ),
        "'labels': complex numbers are not accepted",
    ),
    (
        safetensors.torch.save(
            {"inputs": torch.zeros(2, 4, dtype=torch.float8_e4m3fn), "labels": torch.tensor([0, 1])}
        ),
        "'inputs': unsupported dtype float8_e4m3fn",
    ),
]


@pytest.mark.parametrize(("data", "needle"), CLS_ERRORS)
def test_classification_errors(data: Any, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        validate_dataset(data, MLP)


def test_too_many_samples() -> None:
    assert num_samples(validate_dataset(_classification(5), MLP, max_samples=5)) == 5
    with pytest.raises(DataError, match="too many samples: 5 \\(the limit is 4\\)"):
        validate_dataset(_classification(5), MLP, max_samples=4)


LM_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"input_ids": [[1, 2, 3]], "labels": [0]}, r"unexpected \['labels'\]"),
    ({"inputs": [[1, 2, 3]]}, r"missing \['input_ids'\]"),
    ({"input_ids": torch.tensor([[1.0, 2.0]])}, "token ids must be integers, got float32"),
    ({"input_ids": [1, 2, 3]}, r"expected shape \[N, T\]"),
    ({"input_ids": [[1]]}, "at least 2 tokens"),
    ({"input_ids": [[1] * 7]}, "sequence length 7 exceeds the model's max_len 6"),
    ({"input_ids": [[1, 2], [3, 20]]}, r"token ids must be in \[0, 20\); sample 1 has 20"),
    ({"input_ids": [[1, -2]]}, "sample 0 has -2"),
    ({"input_ids": [[1, 2, 3]], "attention_mask": [[1, 1]]}, r"attention_mask: expected shape \[1, 3\]"),
    ({"input_ids": [[1, 2, 3]], "attention_mask": [[1, 2, 0]]}, "only hold 0 and 1"),
    ({"input_ids": [[1, 2, 3]], "attention_mask": [[1, 0, 0]]}, "fewer than 2 attended tokens"),
]


@pytest.mark.parametrize(("data", "needle"), LM_ERRORS)
def test_causal_lm_errors(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        validate_dataset(data, LM)


def test_causal_lm_valid_with_mask() -> None:
    out = validate_dataset(
        {"input_ids": [[1, 2, 3], [4, 5, 0]], "attention_mask": [[1, 1, 1], [1, 1, 0]]}, LM
    )
    assert out["input_ids"].dtype == out["attention_mask"].dtype == torch.int64
    assert infer_task(out) == "causal-lm"


# --- digests and helpers -------------------------------------------------------------------


def test_digests_distinct_and_sensitive() -> None:
    data = validate_dataset(_classification(6), MLP)
    digests = sample_digests(data)
    assert len(digests) == 6
    assert len(set(digests)) == 6
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests)
    relabelled = dict(data, labels=data["labels"].clone())
    relabelled["labels"][2] = (relabelled["labels"][2] + 1) % 3
    changed = sample_digests(relabelled)
    assert [a == b for a, b in zip(digests, changed, strict=True)] == [True, True, False, True, True, True]
    # A sample's digest does not depend on its neighbours.
    assert sample_digests(take(data, torch.tensor([4, 1]))) == [digests[4], digests[1]]


def test_digests_depend_on_dtype() -> None:
    ids = {"input_ids": torch.tensor([[1, 2, 3]])}
    assert sample_digests(ids) != sample_digests({"input_ids": ids["input_ids"].int()})


def test_digests_stable_across_save_and_load(tmp_path: Path) -> None:
    data = validate_dataset({"input_ids": [[1, 2, 3], [4, 5, 6]]}, LM)
    save_dataset(data, tmp_path / "lm.safetensors")
    assert sample_digests(load_dataset(tmp_path / "lm.safetensors")) == sample_digests(data)


def test_helpers() -> None:
    data = _classification(4)
    assert num_samples(data) == 4
    assert infer_task(data) == "classification"
    with pytest.raises(DataError, match="cannot tell the task"):
        infer_task({"inputs": torch.zeros(1)})
    with pytest.raises(DataError, match="inputs has 4, labels has 3"):
        num_samples({"inputs": torch.zeros(4, 1), "labels": torch.zeros(3)})
    both = concat_datasets([data, take(data, torch.tensor([True, False, False, True]))])
    assert num_samples(both) == 6
    assert torch.equal(both["inputs"][4:], data["inputs"][[0, 3]])
    with pytest.raises(DataError, match="keys"):
        concat_datasets([data, {"inputs": data["inputs"]}])
    with pytest.raises(DataError, match="per-sample shapes differ"):
        concat_datasets([data, {"inputs": torch.zeros(1, 5), "labels": torch.zeros(1, dtype=torch.long)}])


def test_concat_pads_token_sequences() -> None:
    a = {"input_ids": torch.tensor([[1, 2, 3, 4]])}
    b = {"input_ids": torch.tensor([[5, 6], [7, 8]])}
    out = concat_datasets([a, b])
    assert out["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0], [7, 8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    validate_dataset(out, LM)
