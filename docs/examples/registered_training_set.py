"""Files for the README's erasure walkthrough: a training set with sample and subject ids, a model
trained on it with a recorded recipe, and a holdout set.

    python docs/examples/registered_training_set.py var/erasure

writes into the folder:
  train.npz          inputs, labels, sample_ids ("s0".."s1199"), subject_ids ("user-0".."user-119")
  eval.safetensors   the holdout (the digits not used for training)
  model.safetensors  an MLP trained on train.npz with recipe.json
  recipe.json        how it was trained (the service's retrain params plus seed)
  architecture.json  the model's architecture

sklearn's digits only (offline). Ten samples per subject; the subjects user-0 .. user-9 carry
labels of their own (shifted by one), so their data is something only memorisation explains and
forgetting it is measurable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from unlearning import build_model, save_checkpoint
from unlearning.training import train

ARCH = {"name": "mlp", "config": {"input_dim": 64, "hidden_dims": [128], "num_classes": 10}}
RECIPE = {"epochs": 150, "lr": 0.01, "batch_size": 64, "optimizer": "adam", "seed": 0}
N_TRAIN = 1200


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    subjects = np.array([f"user-{i % 120}" for i in range(N_TRAIN)])
    own = torch.tensor([int(s.split("-")[1]) < 10 for s in subjects])
    y_train = torch.where(own, (y[:N_TRAIN] + 1) % 10, y[:N_TRAIN])
    np.savez(
        out / "train.npz",
        inputs=x[:N_TRAIN].numpy(),
        labels=y_train.numpy(),
        sample_ids=np.array([f"s{i}" for i in range(N_TRAIN)]),
        subject_ids=subjects,
    )
    save_file(
        {"inputs": x[N_TRAIN:].contiguous(), "labels": y[N_TRAIN:].contiguous()},
        str(out / "eval.safetensors"),
    )
    torch.manual_seed(RECIPE["seed"])
    model = build_model(ARCH)
    params = {k: v for k, v in RECIPE.items() if k != "seed"}
    train(model, {"inputs": x[:N_TRAIN], "labels": y_train}, **params, seed=RECIPE["seed"], device="cpu")
    save_checkpoint(model, out / "model.safetensors")
    (out / "recipe.json").write_text(json.dumps(RECIPE))
    (out / "architecture.json").write_text(json.dumps(ARCH))
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "var/erasure"))
