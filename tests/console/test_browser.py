"""The console in a real headless Chromium against a real service (API + worker processes).

Each test gets a fresh browser context with the network off but for the service (see conftest):
it fails if a page asked for any other URL, threw, or broke the Content-Security-Policy.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from tests.console.conftest import Console, ConsoleServer
from tests.console.seed import ERASED_SUBJECT, INLINE_SUBJECT, Seeded, wait_job
from tests.integration.conftest import ADMIN_KEY, DIGITS_ARCH, Digits, paused


def _seeded(console: Console) -> Seeded:
    return console.server.seeded


def test_the_key_is_asked_for_once_and_never_put_in_a_url(console: Console) -> None:
    console.open("#/models")
    assert console.page.is_visible("#need-key")
    console.use_key()
    console.page.wait_for_selector("#models-table")
    # Kept for this tab only, and sent as a header: in no URL, no cookie, no localStorage.
    assert console.page.evaluate("Object.values(sessionStorage)") == [ADMIN_KEY]
    assert console.page.evaluate("localStorage.length") == 0
    assert console.page.evaluate("document.cookie") == ""
    console.go("#/audit")
    console.page.wait_for_selector("#audit-table")
    assert console.requests and not [u for u in console.requests if ADMIN_KEY in u]
    # A reload keeps the key (same tab); "Forget key" drops it.
    console.page.reload()
    console.ready()
    console.page.wait_for_selector("#audit-table")
    console.page.click("#key-forget")
    console.ready()
    assert console.page.is_visible("#need-key")
    assert console.page.evaluate("sessionStorage.length") == 0


def test_every_page_renders_with_the_network_off(console: Console) -> None:
    """Every page in one context: all it asks for is the service's own (the fixture aborts and
    records anything else, and fails the test on it, on a page error or on a CSP violation)."""
    seeded = _seeded(console)
    console.open("#/models")
    console.use_key()
    pages = {
        "#/models": "#models-table",
        f"#/models/{seeded.model}": "svg[data-plot=lineage]",
        "#/jobs": "#jobs-table",
        f"#/jobs/{seeded.erasure_job['id']}": "svg[data-plot=accuracy]",
        "#/requests": "#requests-table",
        "#/audit": "#audit-table",
    }
    for route, drawn in pages.items():
        console.go(route)
        console.page.wait_for_selector(drawn)
        assert console.page.locator(".problem").count() == 0, route
    hosts = {urlsplit(u).netloc for u in console.requests}
    assert hosts == {console.server.host}
    assert console.blocked == []
    # What it loaded: the page, its own files, and API calls; no font, script or style from elsewhere.
    paths = {urlsplit(u).path for u in console.requests}
    assert {"/console", "/console/static/js/app.js", "/console/static/console.css"} <= paths
    assert all(p.startswith(("/console", "/v1/")) for p in paths), paths


def test_models_page_lists_the_model_and_draws_its_lineage(console: Console) -> None:
    seeded = _seeded(console)
    console.open("#/models")
    console.use_key()
    row = console.page.locator(f"#models-table tr[data-model='{seeded.model}']")
    row.wait_for()
    assert "classification" in row.inner_text()
    console.shot("models")

    row.locator("a").click()
    console.ready()
    graph = console.page.locator("svg[data-plot=lineage]")
    graph.wait_for()
    versions = {v["version"]: v for v in seeded.versions}
    nodes = graph.locator("g.version")
    assert nodes.count() == len(versions) >= 2
    for number, v in versions.items():
        node = graph.locator(f"g.version[data-version='{number}']")
        assert node.get_attribute("data-status") == v["status"]
        text = node.text_content() or ""
        if v["status"] == "retired":
            # Which versions were retired, and why.
            assert node.get_attribute("data-retired-reason") == v["retired_reason"] == "erasure"
            assert "retired: erasure" in text
        if v["parent_version"] is not None:
            edge = graph.locator(f"path.edge[data-from='{v['parent_version']}'][data-to='{number}']")
            assert edge.count() == 1
            assert v["created_by_job"][:16] in text
    # The training data each version links, as nodes joined by dashed lines.
    linked = {(v["training_data"]["dataset"], v["training_data"]["version"]) for v in versions.values()}
    assert len(linked) >= 2
    for dataset, version in linked:
        node = f"g.dataset[data-dataset='{dataset}'][data-dataset-version='{version}']"
        assert graph.locator(node).count() == 1
    assert graph.locator("path.data-edge").count() == len(versions)
    assert console.page.locator("#versions-table tbody tr").count() == len(versions)
    console.shot("lineage")


def _bar(console: Console, plot: str, metric: str, series: str) -> float:
    rect = console.page.locator(f"svg[data-plot={plot}] rect.bar[data-metric={metric}][data-series={series}]")
    return float(rect.get_attribute("data-value") or "nan")


def test_job_page_shows_metric_plots_and_acceptance_checks(console: Console) -> None:
    seeded = _seeded(console)
    job = seeded.erasure_job
    console.open("#/jobs")
    console.use_key()
    console.page.locator(f"#jobs-table tr[data-job='{job['id']}']").wait_for()
    console.shot("jobs")
    console.page.click(f"#jobs-table tr[data-job='{job['id']}'] a[href^='#/jobs/']")
    console.ready()
    console.page.wait_for_selector("#checks-table")
    assert console.page.inner_text("#job-status") == "succeeded"

    before, after = job["metrics"]["before"], job["metrics"]["after"]
    for metric in ("forget_accuracy", "eval_accuracy"):
        assert _bar(console, "accuracy", metric, "before") == before[metric]
        assert _bar(console, "accuracy", metric, "after") == after[metric]
    # The metrics carry mean losses only (no per-sample distribution): the means are plotted.
    assert console.page.locator("svg[data-plot^=loss-distribution]").count() == 0
    for metric in ("forget_loss", "eval_loss"):
        assert _bar(console, "loss", metric, "before") == before[metric]
        assert _bar(console, "loss", metric, "after") == after[metric]
    assert _bar(console, "mia", "mia_auc", "after") == after["mia_auc"]
    assert console.page.locator("svg[data-plot=mia] line[data-ref=chance]").count() == 1
    assert console.page.locator("svg[data-plot=mia] line[data-ref=limit]").count() == 1

    checks = job["metrics"]["policy"]["checks"]
    rows = console.page.locator("#checks-table tbody tr")
    assert rows.count() == len(checks)
    for name, check in checks.items():
        row = console.page.locator(f"#checks-table tr[data-check='{name}']")
        assert row.get_attribute("data-ok") == json.dumps(check["ok"])
    assert "Accepted" in console.page.inner_text("#acceptance")
    console.shot("job")

    # A job the acceptance policy rejected says which check failed.
    console.go(f"#/jobs/{seeded.inline_job['id']}")
    console.page.wait_for_selector("#checks-table")
    failed = [n for n, c in seeded.inline_job["metrics"]["policy"]["checks"].items() if not c["ok"]]
    assert failed
    for name in failed:
        assert console.page.locator(f"#checks-table tr[data-check='{name}'] .check-failed").count() == 1
    assert "Rejected" in console.page.inner_text("#acceptance")
    console.shot("job-rejected")


def test_loss_distributions_are_plotted_when_the_metrics_carry_them(console: Console) -> None:
    console.open("#/models")
    console.use_key()
    drawn = console.page.evaluate(
        """async () => {
            const plots = await import("/console/static/js/plots.js");
            const m = (shift) => ({
                forget_accuracy: 1, eval_accuracy: 0.9, mia_auc: 0.6,
                forget_loss: 0.1 + shift, eval_loss: 0.5,
                forget_losses: [0.01, 0.02, 0.05, 0.1 + shift, 0.2 + shift],
                eval_losses: [0.1, 0.3, 0.5, 0.7, 0.9, 1.2],
            });
            const hist = { edges: [0, 0.5, 1], forget: [3, 1], eval: [2, 2] };
            const before = plots.lossPlots({ before: m(0), after: m(0.8) });
            const withHist = { loss_histogram: hist };
            const given = plots.lossPlots({ before: withHist, after: withHist });
            const view = document.querySelector("#main .view");
            view.append(...before);
            return {
                ids: before.map((p) => p.dataset.plot),
                forgetBins: before[0].querySelectorAll("rect.hist[data-series=forget]").length,
                evalBins: before[0].querySelectorAll("rect.hist[data-series=eval]").length,
                given: given.map((p) => p.querySelectorAll("rect.hist").length),
            };
        }"""
    )
    assert drawn["ids"] == ["loss-distribution-before", "loss-distribution-after"]
    assert drawn["forgetBins"] > 0 and drawn["evalBins"] > 0
    assert drawn["given"] == [4, 4]
    console.page.locator("svg[data-plot=loss-distribution-before]").screenshot(
        path=str(console.shots / "loss-distribution.png")
    )


def _submit_live(api: Any, digits: Digits, model: str, rows: slice) -> str:
    forget = digits.forget_file(rows)
    r = api.post(
        f"/v1/models/{model}/deletion-requests",
        files={"forget_set": ("f.safetensors", forget, "application/octet-stream")},
        data={"subject": "live-subject", "method": "ga"},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def test_job_progress_follows_the_event_stream(console: Console, digits: Digits) -> None:
    server: ConsoleServer = console.server
    model = "live"
    with server.client() as api:
        api.post("/v1/models", json={"name": model, "task": "classification", "architecture": DIGITS_ARCH})
        files = {
            "checkpoint": ("v1.safetensors", digits.checkpoint, "application/octet-stream"),
            "eval_set": ("eval.safetensors", digits.eval_set, "application/octet-stream"),
        }
        assert api.post(f"/v1/models/{model}/versions", files=files).status_code == 201
        console.open("#/models")
        console.use_key()
        console.page.evaluate("window.__sameDocument = true")

        # The job page: the worker is held, so the job waits in the queue while the page opens.
        with paused(server.worker_pids()):
            job_id = _submit_live(api, digits, model, slice(0, 4))
            console.go(f"#/jobs/{job_id}")
            assert console.page.inner_text("#job-status") == "queued"
            console.page.wait_for_selector(".progress[data-live=following]")
        # Released: the page changes by itself as events arrive.
        console.page.wait_for_selector(".progress[data-live=ended]", timeout=120_000)
        job = wait_job(api, job_id)
        assert console.page.inner_text("#job-status") == job["status"]
        assert int(console.page.get_attribute(".progress", "data-events") or 0) >= 2
        console.page.wait_for_selector("#checks-table")
        assert any(f"/v1/jobs/{job_id}/events" in u for u in console.requests)

        # The jobs list: a queued job's row follows its stream too.
        with paused(server.worker_pids()):
            job_id = _submit_live(api, digits, model, slice(4, 8))
            console.go(f"#/jobs?model={model}")
            row = console.page.locator(f"#jobs-table tr[data-job='{job_id}']")
            assert row.get_attribute("data-status") == "queued"
        job = wait_job(api, job_id)
        console.page.wait_for_selector(f"#jobs-table tr[data-job='{job_id}'][data-status={job['status']}]")
        assert any(f"/v1/jobs/{job_id}/events" in u for u in console.requests)
    # All of it without a reload.
    assert console.page.evaluate("window.__sameDocument") is True


def test_subject_search_finds_the_requests(console: Console) -> None:
    seeded = _seeded(console)
    console.open("#/requests")
    console.use_key()
    console.page.wait_for_selector("#request-results table, #request-results .empty")
    for subject, request in (
        (ERASED_SUBJECT, seeded.erasure_request),
        (INLINE_SUBJECT, seeded.inline_request),
    ):
        console.page.fill("#subject-input", subject)
        console.page.click("#subject-form button[type=submit]")
        console.page.wait_for_selector(f"#request-results[data-subject='{subject}']")
        rows = console.page.locator("#requests-table tbody tr")
        assert rows.count() == 1
        assert rows.first.get_attribute("data-request") == request["id"]
        assert rows.first.get_attribute("data-status") == request["status"]
        assert any("/v1/deletion-requests?" in u and f"subject={subject}" in u for u in console.requests)
        if subject == ERASED_SUBJECT:
            console.shot("requests")
    console.page.fill("#subject-input", "nobody-at-all")
    console.page.click("#subject-form button[type=submit]")
    console.page.wait_for_selector("#request-results[data-subject='nobody-at-all'] .empty")


def _audit_rows(console: Console) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = console.page.eval_on_selector_all(
        "#audit-table tbody tr",
        "rows => rows.map(r => ({action: r.dataset.action, object: r.dataset.object}))",
    )
    return rows


def _apply_audit_filters(console: Console, model: str = "", action: str = "", since: str = "") -> None:
    console.page.fill("#audit-model", model)
    console.page.fill("#audit-action", action)
    console.page.fill("#audit-since", since)
    console.page.click("#audit-filters button[type=submit]")
    console.page.wait_for_selector("#audit-results[data-state=ready]")


def test_audit_page_filters_and_verifies_the_chain(console: Console) -> None:
    seeded = _seeded(console)
    console.open("#/audit")
    console.use_key()
    console.page.wait_for_selector("#audit-table")
    everything = _audit_rows(console)
    assert len(everything) >= 10

    _apply_audit_filters(console, model=seeded.model, action="job.succeeded")
    rows = _audit_rows(console)
    assert rows and {r["action"] for r in rows} == {"job.succeeded"}
    assert seeded.erasure_job["id"] in {r["object"] for r in rows}
    assert any("model=digits" in u and "action=job.succeeded" in u for u in console.requests)

    _apply_audit_filters(console, since="2999-01-01T00:00")
    assert console.page.is_visible("#audit-results .empty")
    _apply_audit_filters(console, since="2000-01-01T00:00")
    # Every event is there again; the worker may have appended one since (a live service).
    assert len(_audit_rows(console)) >= len(everything)

    console.page.click("#verify-button")
    verdict = console.page.locator("#verify-result .verdict")
    verdict.wait_for()
    assert verdict.get_attribute("data-ok") == "true"
    assert verdict.inner_text().startswith("ok")
    console.shot("audit")


def test_a_key_without_audit_read_sees_the_audit_tab_refuse(console: Console) -> None:
    with console.server.client() as api:
        r = api.post("/v1/keys", json={"name": "viewer", "scopes": ["models:read", "jobs:read"]})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
    console.open("#/audit")
    console.use_key(key)
    problem = console.page.locator("#audit-results .problem")
    problem.wait_for()
    assert problem.get_attribute("data-status") == "403"
    assert "lacks the 'audit:read' scope" in problem.inner_text()
    console.page.click("#verify-button")
    console.page.wait_for_selector("#verify-result .problem")
    assert "audit:read" in console.page.inner_text("#verify-result")
    console.shot("audit-forbidden")
    # The same key still reads what its scopes allow.
    console.go("#/models")
    console.page.wait_for_selector("#models-table")


def test_verify_shows_where_a_tampered_chain_breaks(console: Console) -> None:
    db = console.server.database()
    try:
        seq, original = db.execute(
            "SELECT seq, payload FROM audit_events WHERE action = 'job.succeeded' AND model = 'digits' "
            "ORDER BY seq LIMIT 1"
        ).fetchone()
        # One row rewritten behind the service's back, as an attacker with database access would.
        forged = json.dumps({**json.loads(original), "n_samples": 0})
        with db:
            db.execute(
                "UPDATE audit_events SET payload = ? WHERE action = 'job.succeeded' AND seq = ?",
                (forged, seq),
            )
        console.open("#/audit")
        console.use_key()
        console.page.wait_for_selector("#audit-table")
        console.page.click("#verify-button")
        verdict = console.page.locator("#verify-result .verdict")
        verdict.wait_for()
        assert verdict.get_attribute("data-ok") == "false"
        assert verdict.get_attribute("data-first-bad-seq") == str(seq)
        assert f"chain breaks at seq {seq}" in verdict.inner_text()
        # The broken event is marked in the table.
        assert console.page.locator(f"#audit-table tr.bad-row[data-seq='{seq}']").count() == 1
        console.page.locator(f"#audit-table tr[data-seq='{seq}']").scroll_into_view_if_needed()
        console.shot("audit-broken")
    finally:
        with db:
            db.execute(
                "UPDATE audit_events SET payload = ? WHERE action = 'job.succeeded' AND seq = ?",
                (original, seq),
            )
        db.close()
