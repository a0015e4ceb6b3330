"""The CI wiring a team copies, run for real: the pre-commit hook (installed by the `pre-commit` package from a
snapshot of this checkout, then a real `git commit`) and the commands of examples/ci/validate-specs.yml
(qcompile installed from this checkout into a fresh virtual environment, then the workflow's steps)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TESTS

GOOD = TESTS / "specs" / "deepspeed-zero2.yaml"
BAD = "version: 1\nmodel:\n  name: tiny\nhardware:\n  device_memory: 1GiB\n  host_memory: 1GiB\n" \
      "lora:\n  rr: 4\ndata:\n  path: x.jsonl\ntraining:\n  output_dir: out\n"


def _env(**extra) -> dict:
    """The environment of a user's shell: qcompile comes from what was installed, not from this checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("PRE_COMMIT", "GIT_"))}
    return {**env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com", **extra}


def _run(args, cwd, env, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def _snapshot(dest: Path) -> Path:
    """This checkout's files (tracked and untracked, not ignored) as a fresh one-commit git repository."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    env = _env()
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "snapshot"], dest, env)
    return dest


def _user_repo(root: Path) -> Path:
    """A team's repository: specs/ with one good spec (and its pinned model config and data) and one bad."""
    repo = root / "user"
    specs = repo / "specs"
    specs.mkdir(parents=True)
    shutil.copy(GOOD, specs / "good.yaml")
    shutil.copytree(TESTS / "specs" / "models", specs / "models")
    shutil.copytree(TESTS / "specs" / "data", specs / "data")
    (specs / "bad.yaml").write_text(BAD)
    return repo


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_pre_commit_hook_blocks_a_bad_spec_and_passes_a_good_one(tmp_path):
    pytest.importorskip("pre_commit", reason="pre-commit is in the test extra")
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["qcompile-validate"]
    hook_repo = _snapshot(tmp_path / "hook-repo")
    rev = _run(["git", "rev-parse", "HEAD"], hook_repo, _env()).stdout.strip()
    repo = _user_repo(tmp_path)
    config = {"repos": [{"repo": str(hook_repo), "rev": rev,
                         "hooks": [{"id": "qcompile-validate", "files": "^specs/"}]}]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    env = _env(PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"))
    pre_commit = [sys.executable, "-m", "pre_commit"]
    _run(["git", "init", "-q"], repo, env)
    _run([*pre_commit, "install"], repo, env)

    _run(["git", "add", ".pre-commit-config.yaml", "specs/good.yaml", "specs/models", "specs/data"], repo, env)
    good = _run(["git", "commit", "-m", "good spec"], repo, env, check=False)
    out = good.stdout + good.stderr  # git shows the hook's output on stderr
    assert good.returncode == 0, out
    assert "qcompile validate" in out and "Passed" in out

    _run(["git", "add", "specs/bad.yaml"], repo, env)
    bad = _run(["git", "commit", "-m", "bad spec"], repo, env, check=False)
    out = bad.stdout + bad.stderr
    assert bad.returncode == 1, out
    assert "Failed" in out
    assert "specs/bad.yaml:8:3: error: lora.rr: unknown key [extra_forbidden]" in out
    assert "0 valid, 1 invalid" in out  # pre-commit passes the staged files only
    log = _run(["git", "log", "--format=%s"], repo, env).stdout.split()
    assert log == ["good", "spec"], "the bad spec must not have been committed"


def _workflow_steps() -> tuple[dict, list[dict]]:
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "validate-specs.yml").read_text())
    (job,) = workflow["jobs"].values()
    return workflow["env"], job["steps"]


def test_workflow_commands_install_the_light_core_and_annotate_the_bad_spec(tmp_path):
    """Runs each `run:` step of the workflow with bash, in order, as the runner does (a failed step skips the
    rest except `if: always()` ones); the `uses:` steps (checkout, setup-python, upload) are GitHub's own."""
    workflow_env, steps = _workflow_steps()
    repo = _user_repo(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    package = _snapshot(tmp_path / "qcompile-src")
    # Offline: pip, setuptools and the dependencies come from the (system) site-packages; no index is asked.
    path = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
    env = _env(**{**workflow_env, "QCOMPILE_PACKAGE": str(package)}, PATH=path,
               PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1",
               VIRTUAL_ENV=str(venv))
    outputs, failed = {}, False
    for step in steps:
        if "run" not in step or (failed and step.get("if") != "always()"):
            continue
        result = _run(["bash", "-eo", "pipefail", "-c", step["run"]], repo, env, check=False)
        outputs[step["name"]] = result
        failed = failed or result.returncode != 0

    install = outputs["Install qcompile (light core)"]
    assert install.returncode == 0, install.stdout + install.stderr
    which = _run(["bash", "-c", "command -v qcompile"], repo, env).stdout.strip()
    assert which == str(venv / "bin" / "qcompile"), "the workflow must run the qcompile it installed"
    code = "import sys, qcompile; qcompile.validate(['specs']); print(sorted({'torch', 'peft'} & set(sys.modules)))"
    heavy = _run([str(venv / "bin" / "python"), "-c", code], repo, env)
    assert heavy.stdout.strip() == "[]"

    annotate = outputs["Validate specs"]
    assert annotate.returncode == 1, annotate.stdout + annotate.stderr
    lines = annotate.stdout.splitlines()
    assert lines and all(line.startswith(("::error ", "::warning ")) for line in lines), annotate.stdout
    assert any(line.startswith("::error file=specs/bad.yaml,line=8,col=3,title=extra_forbidden::lora.rr: unknown key")
               for line in lines)
    assert not any("good.yaml" in line and line.startswith("::error") for line in lines)

    sarif_step = outputs["Validate specs (SARIF for code scanning)"]
    assert sarif_step.returncode == 0, sarif_step.stderr
    log = json.loads((repo / "qcompile.sarif").read_text())
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    assert "specs/bad.yaml" in uris
