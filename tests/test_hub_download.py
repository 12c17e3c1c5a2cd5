"""Downloading over the network code path, against a fake Hub on 127.0.0.1.

`qwen3next download` runs in subprocesses with HF_ENDPOINT (and HF_HUB_OFFLINE)
in their environment, so huggingface_hub reads them at import as it does for
users; what only needs the files afterwards runs in-process.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli_support import isolated_env, one_line_error, run_cli, tiny_source
from fake_hub import FakeHub, repo_files
from mlx_qwen3next.checkpoints import hub
from mlx_qwen3next.cli.app import app

REPO = "tiny-org/Tiny-Next"
EXTRA = {"README.md": b"# a model card\n", "original/consolidated.pth": b"\0" * 4096,
         "figures/arch.png": b"\x89PNG"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    src = tiny_source(tmp_path_factory.mktemp("hubsrc") / "Tiny-Next")
    return {**repo_files(src), **EXTRA}


@pytest.fixture(scope="module")
def served(files, tmp_path_factory):
    """(fake hub, environment, first download's result), the hub serving REPO."""
    tmp = tmp_path_factory.mktemp("served")
    with FakeHub({REPO: files}) as fake:
        env = isolated_env(tmp, HF_ENDPOINT=fake.url)
        yield fake, env, run_cli(["download", REPO], env)


def fetched(hub_dir, repo=REPO):
    snap = next((hub_dir / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir())
    return {str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file()}


def test_download_fetches_only_what_the_model_needs(files, served):
    fake, env, result = served
    assert result.returncode == 0, result.stderr
    wanted = {f for f in files if f not in EXTRA}
    assert fetched(hub.Path(env["HF_HUB_CACHE"])) == wanted
    assert result.stdout.strip().endswith(fake.sha)
    assert all(fake.gets[(REPO, f)] == 1 for f in wanted)
    assert not any(fake.gets[(REPO, f)] for f in EXTRA)


def test_downloaded_model_is_known_to_the_other_commands(served, monkeypatch):
    import huggingface_hub.constants as hf

    fake, env, _ = served
    monkeypatch.setenv("QWEN3NEXT_HOME", env["QWEN3NEXT_HOME"])
    monkeypatch.setattr(hf, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    info = CliRunner().invoke(app, ["info", REPO])
    assert info.exit_code == 0 and "active per token" in info.stdout, info.output
    models = CliRunner().invoke(app, ["models"])
    assert REPO in models.stdout and "downloaded" in models.stdout


def test_offline_uses_the_cache_and_never_the_network(served, tmp_path):
    fake, env, first = served
    assert first.returncode == 0
    before = sum(fake.gets.values())
    local = tmp_path / "here"
    again = run_cli(["download", REPO, "-q"], dict(env, HF_HUB_OFFLINE="1"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == first.stdout.strip()
    assert sum(fake.gets.values()) == before
    # and with the network: --local-dir puts the files in a folder of one's choosing
    result = run_cli(["download", REPO, "--local-dir", local, "-q"], env)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in local.iterdir() if p.is_file()} == fetched(hub.Path(env["HF_HUB_CACHE"]))


def test_interrupted_download_resumes_without_refetching(files, tmp_path):
    shard = sorted(f for f in files if f.endswith(".safetensors"))[0]
    with FakeHub({REPO: files}) as fake:
        env = isolated_env(tmp_path, HF_ENDPOINT=fake.url)
        fake.break_file, fake.break_after = shard, len(files[shard]) // 2
        first = run_cli(["download", REPO], env)
        assert "run again to resume" in one_line_error(first)
        assert shard not in fetched(tmp_path / "hub")
        done_first = {f for f in files if fake.gets[(REPO, f)]} - {shard}
        assert done_first  # other files finished before the run failed
        broken_gets = fake.gets[(REPO, shard)]

        fake.break_file = None
        second = run_cli(["download", REPO], env)
        assert second.returncode == 0, second.stderr
        assert fake.gets[(REPO, shard)] == broken_gets + 1
        for f in done_first:
            assert fake.gets[(REPO, f)] == 1, f  # finished files were not fetched again
        assert next((tmp_path / "hub").rglob(shard)).read_bytes() == files[shard]


def test_unknown_repo_and_unreachable_hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    with FakeHub({}) as fake:
        with pytest.raises(hub.HubError, match="no such repository"):
            hub.fetch("nobody/nothing", endpoint=fake.url)
    with pytest.raises(hub.HubError, match="cannot reach the Hub"):
        hub.fetch(REPO, endpoint="http://127.0.0.1:9")  # the discard port: refused
