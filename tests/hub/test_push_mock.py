"""push_to_hub against a mocked Hub HTTP API (huggingface_hub's client factory + an httpx2 MockTransport).

The mock answers the endpoints create_repo / upload_folder use and records every request and every committed file;
huggingface_hub's own request hook stays installed, so offline mode is really switched off for these tests only.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import huggingface_hub
import huggingface_hub.constants
import pytest
from hub_fixtures import DATASET, METRICS, REPO_ID
from huggingface_hub import ModelCard
from huggingface_hub.utils import _http as hf_http

from gsp_hub.hub import push_to_hub, update_card

COMMIT_OID = "a" * 40


@dataclass
class MockHub:
    """Requests seen (method, path), repositories created and cards validated (request bodies), and commits
    (repo, {path: bytes})."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)
    validated: list[dict] = field(default_factory=list)
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        method, path = request.method, request.url.path
        self.requests.append((method, path))
        if method == "POST" and path == "/api/repos/create":
            body = json.loads(request.content)
            self.created.append(body)
            name = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{name}", "name": name})
        if method == "POST" and path == "/api/validate-yaml":  # upload_folder asks the Hub to check README metadata
            self.validated.append(json.loads(request.content))
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if method == "GET" and path == "/api/whoami-v2":
            return httpx2.Response(200, json={"name": "me", "type": "user", "orgs": []})
        if method == "POST" and "/preupload/" in path:  # every file inline ("regular"), no LFS / Xet round trip
            files = json.loads(request.content)["files"]
            return httpx2.Response(
                200,
                json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
            )
        if method == "POST" and "/commit/" in path:  # NDJSON: a header line, then one line per file
            lines = [json.loads(line) for line in request.content.decode().splitlines() if line.strip()]
            repo = path.split("/api/models/")[1].split("/commit/")[0]
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            self.commits.append((repo, files))
            return httpx2.Response(
                200, json={"commitUrl": f"https://huggingface.co/{repo}/commit/{COMMIT_OID}", "commitOid": COMMIT_OID}
            )
        return httpx2.Response(500, json={"error": f"unhandled {method} {path}"})


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockHub]:
    mock = MockHub()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest sets HF_HUB_OFFLINE=1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    original_factory = hf_http._GLOBAL_CLIENT_FACTORY
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(
            transport=httpx2.MockTransport(mock.handle),
            event_hooks={"request": [hf_http.hf_request_event_hook]},  # the real offline guard
        )
    )
    yield mock
    huggingface_hub.set_client_factory(original_factory)


def export_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_push_uploads_exactly_the_export_and_the_card_carries_the_metrics(
    hub: MockHub, export_dir: Path, tmp_path: Path
) -> None:
    commit = push_to_hub(export_dir, REPO_ID, token="hf_dummy", private=True, commit_message="first upload")

    assert commit.oid == COMMIT_OID
    assert [(c["organization"], c["name"], c["visibility"]) for c in hub.created] == [(*REPO_ID.split("/"), "private")]
    readme = (export_dir / "README.md").read_text()
    assert hub.validated and all(body["content"] == readme for body in hub.validated)
    ((repo, files),) = hub.commits
    assert repo == REPO_ID
    assert files == export_files(export_dir)
    assert set(files) == {"config.json", "model.safetensors", "README.md"}

    (tmp_path / "README.md").write_bytes(files["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "gsp_hub"
    measured = {(r.metric_name, r.dataset_name, r.dataset_split): r.metric_value for r in card.data.eval_results}
    assert measured == {
        ("R@1", DATASET["name"], "test"): METRICS["recall@1"],
        ("R@2", DATASET["name"], "test"): METRICS["recall@2"],
        ("MAP@R", DATASET["name"], "test"): METRICS["map@r"],
        ("R-Precision", DATASET["name"], "test"): METRICS["r_precision"],
    }
    assert f'gsp_hub.from_pretrained("{REPO_ID}")' in card.text


def test_push_model_exports_for_the_repo_on_the_fly(hub: MockHub, trained_model, tmp_path: Path) -> None:
    push_to_hub(
        trained_model, "someone/on-the-fly", token="hf_dummy", metrics={"recall@1": 0.5}, dataset="fashion-mnist"
    )

    ((repo, files),) = hub.commits
    assert repo == "someone/on-the-fly" and set(files) == {"config.json", "model.safetensors", "README.md"}
    assert json.loads(files["config.json"])["gsp_hub"]["repo_id"] == "someone/on-the-fly"
    (tmp_path / "README.md").write_bytes(files["README.md"])
    (result,) = ModelCard.load(tmp_path / "README.md").data.eval_results
    assert (result.metric_name, result.metric_value, result.dataset_type) == ("R@1", 0.5, "fashion-mnist")


def test_push_refuses_a_card_made_for_another_repo_before_any_request(
    hub: MockHub, export_dir: Path, export_copy: Path
) -> None:
    with pytest.raises(ValueError, match=r"gsp-hub card .* --repo-id other/name"):
        push_to_hub(export_dir, "other/name", token="hf_dummy")
    with pytest.raises(ValueError, match=r"'org/name'"):
        push_to_hub(export_dir, "no-namespace", token="hf_dummy")
    with pytest.raises(FileNotFoundError, match=r"README\.md"):
        (export_copy / "README.md").unlink()
        push_to_hub(export_copy, REPO_ID, token="hf_dummy")
    assert hub.requests == []


def test_push_refuses_local_paths_before_any_request_and_the_rerendered_card_pushes(
    hub: MockHub, export_copy: Path
) -> None:
    """An export written before paths were reduced (here: its recipe names a local folder) is refused; re-rendering
    the card (update_card / `gsp-hub card`) removes the path and the push goes through."""
    config = json.loads((export_copy / "config.json").read_text())
    config["gsp_hub"]["card"]["recipe"]["dataset"] = "/home/someone/data/fmnist"
    (export_copy / "config.json").write_text(json.dumps(config, indent=2))
    with pytest.raises(ValueError, match=r"local absolute paths \(config\.json: /home/someone/data/fmnist\)"):
        push_to_hub(export_copy, REPO_ID, token="hf_dummy")
    assert hub.requests == []

    update_card(export_copy)
    push_to_hub(export_copy, REPO_ID, token="hf_dummy")
    ((_, files),) = hub.commits
    assert "dataset: '.../fmnist'" in files["README.md"].decode() and b"/home/someone" not in files["config.json"]


def test_push_after_retargeting_the_card(hub: MockHub, export_copy: Path) -> None:
    weights = (export_copy / "model.safetensors").read_bytes()
    update_card(export_copy, repo_id="other/name")
    push_to_hub(export_copy, "other/name", token="hf_dummy")

    ((repo, files),) = hub.commits
    assert repo == "other/name" and files["model.safetensors"] == weights
    assert 'timm.create_model("hf-hub:other/name", pretrained=True)' in files["README.md"].decode()


def test_publish_script_pushes_every_zoo_folder(hub: MockHub, capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/publish.py with its default --zoo-dir (the repository's zoo/): one commit per folder, to the repo
    its card names, holding every file of the folder byte for byte."""
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    spec = importlib.util.spec_from_file_location("publish", scripts / "publish.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    assert publish.main(["--token", "hf_test"]) == 0
    folders = sorted(path for path in publish.ZOO_DIR.iterdir() if path.is_dir())
    assert [repo for repo, _ in hub.commits] == [f"gsp-hub/{folder.name}" for folder in folders]
    for (_, files), folder in zip(hub.commits, folders, strict=True):
        assert files == {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    assert capsys.readouterr().out.count("pushed ") == len(folders)
