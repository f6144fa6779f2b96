"""The ``unlearn-client`` command as a subprocess against the real service."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.sdk.conftest import DIGITS_ARCH, Digits, Server, unique

SCRIPT = Path(sys.executable).with_name("unlearn-client")


class Cli:
    """Runs the CLI with a config folder of its own and no UNLEARN_* variables but those given."""

    def __init__(self, server: Server, home: Path) -> None:
        self.server = server
        self.home = home

    def env(self, **extra: str) -> dict[str, str]:
        return self.server.env(XDG_CONFIG_HOME=str(self.home), **extra)

    def run(self, *args: str, env: dict[str, str] | None = None, check: int | None = 0) -> Any:
        done = subprocess.run(
            [str(SCRIPT), *args], env=env or self.env(), capture_output=True, text=True, timeout=300
        )
        if check is not None:
            assert done.returncode == check, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str, **kwargs: Any) -> Any:
        done = self.run(*args, "--json", **kwargs)
        return json.loads(done.stdout)

    def login(self) -> None:
        self.run("login", "--url", self.server.url, "--api-key", self.server.admin_key)


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    return Cli(server, tmp_path / "config")


def test_remote_commands_do_not_import_torch(cli: Cli) -> None:
    cli.login()
    for args in (["--help"], ["models", "list", "--json"]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "unlearn_client.cli", *args],
            env=cli.env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
        assert "unlearn_client.cli.app" in imported
        assert not [m for m in imported if m.split(".")[0] in {"torch", "numpy", "service", "unlearning"}]
    probe = (
        "import sys, unlearn_client.cli.app; print(sorted(m for m in sys.modules if m.startswith('torch')))"
    )
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
    )


def test_login_stores_the_key_privately_and_the_environment_overrides_it(cli: Cli) -> None:
    stored = cli.json("login", "--url", cli.server.url, "--api-key", cli.server.admin_key)
    path = Path(stored["config"])
    assert path == cli.home / "unlearn" / "config.json" and stored["checked"] is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"url": cli.server.url, "api_key": cli.server.admin_key}
    assert isinstance(cli.json("models", "list"), list)

    # UNLEARN_URL wins over the file: nothing listens on port 9.
    done = cli.run("models", "list", "--json", env=cli.env(UNLEARN_URL="http://127.0.0.1:9"), check=3)
    assert json.loads(done.stdout)["title"] == "Service unreachable"
    # So does UNLEARN_API_KEY.
    done = cli.run("models", "list", "--json", env=cli.env(UNLEARN_API_KEY="ulk_wrong"), check=1)
    assert json.loads(done.stdout)["status"] == 401

    assert cli.json("logout") == {"config": str(path), "removed": True}
    done = cli.run("--json", "models", "list", check=2)
    assert "login" in json.loads(done.stdout)["detail"]


def test_login_refuses_a_key_the_service_rejects(cli: Cli) -> None:
    done = cli.run("login", "--url", cli.server.url, "--api-key", "ulk_wrong", "--json", check=1)
    assert json.loads(done.stdout)["status"] == 401
    assert not (cli.home / "unlearn" / "config.json").exists()


def test_errors_are_problem_json_with_a_nonzero_exit(cli: Cli) -> None:
    cli.login()
    done = cli.run("models", "get", "no-such-model", "--json", check=1)
    problem = json.loads(done.stdout)
    assert (
        problem["status"] == 404 and problem["title"] == "Not Found" and "no-such-model" in problem["detail"]
    )
    assert done.stderr == ""
    # Without --json: one line on stderr, nothing on stdout.
    done = cli.run("models", "get", "no-such-model", check=1)
    assert done.stdout == "" and done.stderr.startswith("error: 404 Not Found: ")
    # A validation error lists where.
    done = cli.run("--json", "models", "create", "bad name!", "--architecture", "mlp", check=1)
    assert json.loads(done.stdout)["errors"][0]["loc"][-1] == "name"


def test_the_whole_flow_from_the_command_line(cli: Cli, digits: Digits, tmp_path: Path) -> None:
    import torch

    cli.login()
    name = unique("cli")
    arch_file = tmp_path / "architecture.json"
    arch_file.write_text(json.dumps(DIGITS_ARCH))
    (tmp_path / "model.safetensors").write_bytes(digits.checkpoint)
    (tmp_path / "eval.safetensors").write_bytes(digits.eval_set)
    forget = torch.nonzero(digits.y_train == 3).flatten()[:20]
    (tmp_path / "forget.safetensors").write_bytes(digits.forget_file(forget))

    model = cli.json("models", "create", name, "--architecture", str(arch_file), "--tag", "cli")
    assert model["name"] == name and model["tags"] == ["cli"]
    assert cli.json("models", "get", name)["architecture"] == DIGITS_ARCH
    assert name in [m["name"] for m in cli.json("models", "list")]
    version = cli.json(
        "versions", "upload", name, str(tmp_path / "model.safetensors"),
        "--eval-set", str(tmp_path / "eval.safetensors"),
    )  # fmt: skip
    assert version["version"] == 1 and version["eval_set"]["n_samples"] == len(digits.y_eval)

    # A file, waited for: the finished request is printed, exit 0 because it completed.
    done = cli.json("submit", name, str(tmp_path / "forget.safetensors"), "--subject", "user-42", "--wait")
    assert done["status"] == "completed" and done["result_version"] == 2
    request_id, job_id = done["id"], done["job_id"]
    assert cli.json("status", request_id)["status"] == "completed"
    job = cli.json("status", job_id)
    assert job["status"] == "succeeded" and job["deletion_requests"] == [request_id]
    assert cli.json("wait", request_id)["id"] == request_id
    assert cli.json("wait", job_id)["result_version"] == 2
    assert [r["id"] for r in cli.json("requests", "list", "--model", name, "--subject", "user-42")] == [
        request_id
    ]
    assert job["id"] in [j["id"] for j in cli.json("jobs", "list", "--model", name, "--status", "succeeded")]

    out = tmp_path / "out"
    downloaded = cli.json("download", name, "2", "--output", f"{out}/")  # a folder: the server's name
    path = Path(downloaded["path"])
    assert path == out / f"{name}-v2.safetensors" and downloaded["verified"] is True
    assert hashlib.sha256(path.read_bytes()).hexdigest() == downloaded["sha256"]
    again = cli.json("versions", "download", name, "2", "-o", str(out / "v2.safetensors"))
    assert Path(again["path"]).read_bytes() == path.read_bytes()

    # Inline samples, not waited for; then followed by `wait` with a progress bar on stderr.
    # Samples of their own: the service answers a request for samples already forgotten at once.
    fresh = torch.nonzero(digits.y_train == 3).flatten()[20:23]
    inline = json.dumps(digits.samples(fresh.tolist()))
    queued = cli.json("submit", name, "--samples", inline, "--params", '{"scope": "samples"}')
    assert queued["status"] in ("queued", "running") and queued["n_samples"] == 3
    followed = cli.run("wait", queued["job_id"], "--progress", check=None)
    assert followed.returncode in (0, 6), followed.stderr  # 6: the job ran but did not succeed
    assert f"job {queued['job_id']}" in followed.stderr  # the bar names the job

    assert [v["version"] for v in cli.json("versions", "list", name)][:2] == [1, 2]

    events = cli.json("audit", "list", "--model", name, "--action", "job.succeeded")
    assert len(events) >= 1 and events[0]["payload"]["result_version"] == 2
    assert cli.json("audit", "verify")["ok"] is True
    # For people: a table (as wide as the terminal says it is).
    table = cli.run("audit", "list", "--model", name, "--limit", "2", env=cli.env(COLUMNS="250")).stdout
    assert "model.created" in table and "version.created" in table and "job.succeeded" not in table

    key = cli.json("keys", "create", unique("ci"), "--scope", "models:read", "--scope", "jobs:read")
    assert key["key"].startswith("ulk_") and sorted(key["scopes"]) == ["jobs:read", "models:read"]
    assert key["id"] in [k["id"] for k in cli.json("keys", "list")]
    assert cli.json("keys", "revoke", key["id"])["revoked_at"] is not None


def test_health(cli: Cli) -> None:
    cli.login()
    started = time.monotonic()
    ready = cli.json("health")
    assert ready["status"] == "ok" and ready["checks"]["database"] == "ok"
    assert time.monotonic() - started < 20
