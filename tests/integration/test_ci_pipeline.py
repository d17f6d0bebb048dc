"""The CI workflow (deploy/ci/github-actions.yml) executed here, not just parsed.

Each job's ``run:`` scripts run in order with bash as GitHub runs them (``bash --noprofile --norc
-eo pipefail``), in the repository as the checkout, with the workflow's env (smaller training and
sample values, a free loopback port), ``GITHUB_ENV``/``GITHUB_PATH``/``GITHUB_STEP_SUMMARY`` as
files and a ``RUNNER_TEMP`` of its own per job, as on a runner. ``uses:`` steps are left out: the
checkout is this tree, setup-python is this venv's Python on ``PATH``, and the artifacts that
carry the state between jobs are not needed because every job sees the same fresh state dir.
Jobs start when what they ``need`` has passed (the image build alongside the model stages, as on
GitHub); ``if: always()`` is honoured. Every process a step starts is remembered by pid and
killed if the step left it running (which fails the test).

Faults are injected so each self-healing step has something to heal: a test that fails once
(the retry), a dirty drifted batch (the repair, the drift retrain), a damaged current model before
stage 4 (the rollback), the crash drill (the recovery), and, with no container registry here, a
base image that cannot be pulled (the image build's retry on a base from Debian's mirror). The
image job needs root, podman, runc and mmdebstrap, as tests/container does (``make test`` installs
them); without them it is skipped, and the test prints so. It runs on the session's podman
storage, Debian base and wheelhouse (the fixtures tests/container builds on, made once per
session): the workflow's own knobs point at them (``SELFHEAL_PODMAN_ROOT``, ``CI_FALLBACK_BASE``,
``CI_WHEEL_DIR``), so the retry finds its fallback base made and builds on it for real, with
podman's layer cache off (``BUILDAH_LAYERS=false``: the container suite's build of the same
Containerfile must not stand in for this one). About a minute on two cores once the fixtures
exist (the image job, 50-60 s, is the long pole; the model stages beside it take about 40 s),
and another minute when this test is the first to need the base and the wheelhouse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml  # type: ignore[import-untyped]

from selfheal_daemon.config import load_config
from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from selfheal_daemon.record.audit import read_records
from tests.conftest import CONTAINER_NEEDS
from tests.container.engine import Podman
from tests.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "deploy" / "ci" / "github-actions.yml"
ACTIONS = {
    "actions/checkout@v4",
    "actions/setup-python@v5",
    "actions/upload-artifact@v4",
    "actions/download-artifact@v4",
}
NEEDS_EXPR = "${{ toJSON(needs) }}"
STEP_TIMEOUT_S = 420.0
BASH = shutil.which("bash") or "/bin/bash"
FLAKY_TEST = """
from pathlib import Path

MARK = Path(__file__).with_name("failed-once")


def test_steady():
    assert True


def test_fails_the_first_time_only():
    if not MARK.exists():
        MARK.write_text("failed")
        raise AssertionError("a flaky failure")
"""


def load_workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def walk(node: Any) -> Any:
    """Every mapping key and scalar in the YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)
    else:
        yield node


def needs_of(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def always(node: dict[str, Any]) -> bool:
    """The only condition the workflow uses; any other is refused by the static test."""
    condition = node.get("if")
    if condition is None:
        return False
    assert str(condition).strip() in ("always()", "${{ always() }}"), condition
    return True


# ----- the workflow's shape -------------------------------------------------------------------


def test_the_workflow_has_the_eight_stages_and_only_what_this_test_can_execute() -> None:
    workflow = load_workflow()
    assert "continue-on-error" not in WORKFLOW.read_text()
    assert "continue-on-error" not in list(walk(workflow))
    jobs: dict[str, dict[str, Any]] = workflow["jobs"]
    names = [str(job["name"]) for job in jobs.values()]
    assert [name.split()[0] for name in names] == [str(n) for n in range(1, 9)], names
    assert workflow["defaults"]["run"]["shell"] == "bash"
    for key, value in workflow["env"].items():
        assert "${{" not in str(value), f"workflow env {key} is an expression"
    uploaded: dict[str, str] = {}
    for job_id, job in jobs.items():
        assert "env" not in job, f"{job_id}: job-level env (keep the knobs at the top)"
        for step in job["steps"]:
            if "uses" in step:
                assert step["uses"] in ACTIONS, step["uses"]
                name = str((step.get("with") or {}).get("name", ""))
                if step["uses"].startswith("actions/upload-artifact"):
                    uploaded[name] = job_id
                    assert always(step), f"{job_id}: the state is uploaded even after a failure"
                elif step["uses"].startswith("actions/download-artifact") and name:
                    # the state comes from the stage this one needs: that is the order we run
                    assert uploaded.get(name) in needs_of(job), (job_id, name)
                continue
            assert "${{" not in step["run"], f"{job_id}/{step.get('name')}: expression in run"
            for key, value in (step.get("env") or {}).items():
                assert value == NEEDS_EXPR, f"{job_id}: step env {key} = {value}"
            if "if" in step:
                always(step)
    # stage 8 reports whatever failed before it
    assert always(jobs["summary"])
    assert set(needs_of(jobs["summary"])) == set(jobs) - {"summary"}
    # loopback only, in the config the workflow writes
    assert 'host = "127.0.0.1"' in WORKFLOW.read_text()
    assert "0.0.0.0" not in WORKFLOW.read_text()


# ----- running it -----------------------------------------------------------------------------


@dataclass
class StepResult:
    job: str
    name: str
    rc: int
    seconds: float
    output: str


@dataclass
class Runner:
    """Runs the workflow's jobs as a GitHub runner would, on this machine."""

    workflow: dict[str, Any]
    tmp: Path
    overrides: dict[str, str]
    before_job: dict[str, Callable[[], None]] = field(default_factory=dict)
    skip_jobs: dict[str, str] = field(default_factory=dict)  # job -> why
    results: dict[str, str] = field(default_factory=dict)  # job -> success | failure | skipped
    steps: list[StepResult] = field(default_factory=list)
    summaries: dict[str, Path] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    active: dict[int, dict[int, float]] = field(default_factory=dict)  # bash pid -> descendants
    lock: threading.Lock = field(default_factory=threading.Lock)

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SELFHEAL_"))}
        env.update({k: str(v) for k, v in self.workflow.get("env", {}).items()})
        env.update(
            CI="true",
            GITHUB_ACTIONS="true",
            GITHUB_WORKSPACE=str(ROOT),
            RUNNER_OS="Linux",
            OMP_NUM_THREADS="1",
        )
        env.update(self.overrides)
        return env

    def run(self) -> None:
        jobs: dict[str, dict[str, Any]] = self.workflow["jobs"]
        pending = dict(jobs)
        running: dict[str, threading.Thread] = {}
        while pending or running:
            for job_id, job in list(pending.items()):
                needs = needs_of(job)
                if any(n not in self.results for n in needs):
                    continue
                del pending[job_id]
                if job_id in self.skip_jobs or (
                    not always(job) and any(self.results[n] != "success" for n in needs)
                ):
                    self.results[job_id] = "skipped"
                    continue
                thread = threading.Thread(target=self.run_job, args=(job_id, job), daemon=True)
                running[job_id] = thread
                thread.start()
            for job_id, thread in list(running.items()):
                if not thread.is_alive():
                    thread.join()
                    del running[job_id]
                    self.results.setdefault(job_id, "failure")
            time.sleep(0.05)

    def run_job(self, job_id: str, job: dict[str, Any]) -> None:
        hook = self.before_job.get(job_id)
        if hook is not None:
            hook()
        home = self.tmp / "runners" / job_id
        temp = home / "temp"
        temp.mkdir(parents=True)
        files = {name: home / name for name in ("env", "path", "summary", "output")}
        for path in files.values():
            path.touch()
        self.summaries[job_id] = files["summary"]
        env = self.base_env()
        env.update(
            RUNNER_TEMP=str(temp),
            GITHUB_ENV=str(files["env"]),
            GITHUB_PATH=str(files["path"]),
            GITHUB_STEP_SUMMARY=str(files["summary"]),
            GITHUB_OUTPUT=str(files["output"]),
            GITHUB_JOB=job_id,
        )
        failed = False
        for number, step in enumerate(job["steps"]):
            if "uses" in step:
                if step["uses"].startswith("actions/setup-python"):
                    # this venv's Python (3.11) stands in for the one setup-python installs
                    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
                continue
            if failed and not always(step):
                continue
            step_env = {**env, **apply_github_files(env, files)}
            for key, value in (step.get("env") or {}).items():
                step_env[key] = self.needs_json(job) if value == NEEDS_EXPR else str(value)
            name = str(step.get("name", f"step {number}"))
            result = self.run_step(job_id, name, step["run"], step_env, temp)
            with self.lock:
                self.steps.append(result)
            failed = failed or result.rc != 0
        self.results[job_id] = "failure" if failed else "success"

    def needs_json(self, job: dict[str, Any]) -> str:
        return json.dumps({n: {"result": self.results[n], "outputs": {}} for n in needs_of(job)})

    def run_step(
        self, job_id: str, name: str, script: str, env: dict[str, str], temp: Path
    ) -> StepResult:
        path = temp / f"step-{len(list(temp.glob('step-*.sh')))}.sh"
        path.write_text(script)
        log = path.with_suffix(".log")
        seen: dict[int, float] = {}
        started = time.monotonic()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [BASH, "--noprofile", "--norc", "-eo", "pipefail", str(path)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self.lock:
                self.active[proc.pid] = seen
            try:
                while proc.poll() is None:
                    remember(proc.pid, seen)
                    if time.monotonic() - started > STEP_TIMEOUT_S:
                        proc.kill()
                    time.sleep(0.1)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
                with self.lock:
                    del self.active[proc.pid]
        left = kill_survivors(seen)
        if left:
            with self.lock:
                self.leftovers.append(f"{job_id}/{name}: {left}")
        return StepResult(
            job_id, name, proc.returncode, time.monotonic() - started, log.read_text()
        )

    def abort(self) -> None:
        """Kill every step still running and what it started (the test is ending early)."""
        with self.lock:
            active = {pid: dict(seen) for pid, seen in self.active.items()}
        for pid, seen in active.items():
            remember(pid, seen)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            kill_survivors(seen)

    def summary(self) -> str:
        return "\n".join(
            self.summaries[j].read_text() for j in self.workflow["jobs"] if j in self.summaries
        )

    def failures(self) -> str:
        return "\n\n".join(
            f"--- {s.job} / {s.name}: exit {s.rc}\n{s.output[-6000:]}" for s in self.steps if s.rc
        )


def apply_github_files(env: dict[str, str], files: dict[str, Path]) -> dict[str, str]:
    """What earlier steps wrote to GITHUB_ENV and GITHUB_PATH, applied as the runner does."""
    extra: dict[str, str] = {}
    for line in files["env"].read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            extra[key] = value
    added = [line for line in files["path"].read_text().splitlines() if line.strip()]
    if added:
        extra["PATH"] = os.pathsep.join([*reversed(added), env["PATH"]])
    return extra


def remember(pid: int, seen: dict[int, float]) -> None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                seen[child.pid] = child.create_time()


def kill_survivors(seen: dict[int, float]) -> list[str]:
    """Kill, by pid, every process the step started that still runs; say which they were."""
    left = []
    for pid, created in seen.items():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
                proc.kill()
    return left


def damage_current_model(state: Path) -> None:
    registry = ModelRegistry(state / "registry")
    current = registry.alias("current")
    assert current is not None
    model = state / "registry" / current / MODEL_FILE
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    model.write_bytes(bytes(blob))


def image_job_on_the_session_podman(request: pytest.FixtureRequest) -> tuple[Podman, str, Path]:
    """The session's podman storage, Debian base and wheelhouse (tests/conftest.py), made now if
    no test made them before: the image job builds on them instead of making its own."""
    podman: Podman = request.getfixturevalue("podman")
    base: str = request.getfixturevalue("base_image")
    wheels: Path = request.getfixturevalue("wheelhouse")
    return podman, base, wheels


def check_the_image_was_built_now(podman: Podman, tag: str, base: str, since: float) -> bool:
    """The image the job tagged was committed during the run (not found in a cache); whether
    its first layer is the fallback base's (the retry built it on that base)."""
    (image,) = json.loads(podman.run("image", "inspect", tag).stdout)
    (fallback,) = json.loads(podman.run("image", "inspect", base).stdout)
    created = podman.run("image", "inspect", "--format", "{{.Created.Unix}}", tag).stdout
    assert int(created) >= int(since), (created, since)
    layers, base_layers = image["RootFS"]["Layers"], fallback["RootFS"]["Layers"]
    return bool(layers[: len(base_layers)] == base_layers and len(layers) > len(base_layers))


@pytest.mark.timeout(900)
def test_every_run_step_of_the_workflow_executes_and_heals_what_it_finds(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    state = tmp_path / "state"
    flaky = tmp_path / "flaky" / "test_flaky.py"
    flaky.parent.mkdir()
    flaky.write_text(FLAKY_TEST)
    runner = Runner(
        load_workflow(),
        tmp_path,
        overrides={
            "CI_STATE": str(state),
            "SELFHEAL_CONFIG": str(state / "config.toml"),
            "CI_TESTS": str(flaky),
            "CI_SAMPLE_ROWS": "800",
            "CI_MAX_ITER": "30",
            "CI_LEARNING_RATE": "0.3",
            "CI_REFERENCE_ROWS": "500",
            "CI_DRIFT_MIN_ROWS": "300",
            "CI_WORKERS": "2",
            "CI_SERVICE_PORT": str(free_port()),
            "CI_READY_TIMEOUT_S": "90",
        },
        before_job={"validate": lambda: damage_current_model(state)},
    )
    tag = str(runner.workflow["env"]["CI_IMAGE_TAG"])
    podman: Podman | None = None
    base = ""
    on_fallback = False
    missing = [tool for tool in CONTAINER_NEEDS if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        # as tests/container: without a registry the build passes only on the Debian base
        runner.skip_jobs["image"] = "needs root and " + ", ".join(missing or ["(root)"])
        print(f"the image job is skipped: {runner.skip_jobs['image']}")
    else:
        podman, base, wheels = image_job_on_the_session_podman(request)
        runner.overrides.update(
            SELFHEAL_PODMAN_ROOT=str(podman.root),
            CI_FALLBACK_BASE=base,
            CI_WHEEL_DIR=str(wheels),
            BUILDAH_LAYERS="false",  # a real build: no layer of the container suite's image reused
        )
    since = time.time()  # wall clock, as podman stamps an image's creation (not a deadline)
    started = time.monotonic()
    try:
        runner.run()
        if podman is not None and runner.results.get("image") == "success":
            on_fallback = check_the_image_was_built_now(podman, tag, base, since)
    finally:
        runner.abort()
        if podman is not None:  # only what the job made: the session's storage outlives the test
            podman.run("rmi", "--force", tag, ok=False, timeout=300)
    took = time.monotonic() - started
    timings = ", ".join(f"{s.job}/{s.name[:24]} {s.seconds:.1f}s" for s in runner.steps)
    print(f"workflow ran in {took:.1f} s: {timings}")
    expected = {job: "success" for job in runner.workflow["jobs"]}
    expected.update({job: "skipped" for job in runner.skip_jobs})
    assert runner.results == expected, runner.failures()
    assert not runner.leftovers, runner.leftovers
    check_what_each_stage_healed(runner, state, expected, on_fallback)


def check_what_each_stage_healed(
    runner: Runner, state: Path, expected: dict[str, str], on_fallback: bool
) -> None:
    out = {s.job: "" for s in runner.steps}
    for step in runner.steps:
        out[step.job] += step.output
    summary = runner.summary()
    # 1: the flaky test failed, then passed on the retry of the failed ones alone
    assert "tests failed: running the failed ones once more" in out["lint-test"]
    assert "1 failed, 1 passed" in out["lint-test"]
    assert "self-healed: the failed tests passed on the retry" in summary
    # 2: the dirty batch was repaired: gaps filled, the impossible row and the duplicate set aside
    assert "quarantined 2" in summary
    assert "Filled AveOccup with median" in summary
    # 3: the first model and a candidate, gated
    assert re.search(r"\*\*train\*\*: `selfheal once` exit 0: promoted v2 over v1", summary)
    # 4: the damaged current model was found and rolled back, and what is served verifies
    assert "a model failed verification: selfheal once rolls back" in out["validate"]
    assert "self-healed: v2 failed verification, rolled back to v1" in summary
    assert re.search(r"- current = v\d+: verified", summary)
    # 5: the shifted batch drifted, and a candidate was trained on it and gated
    assert "**drift detected**" in summary
    assert "self-healed: retrained" in summary
    # 6: served on loopback, a worker killed and replaced
    assert "crash drill: resolved in" in summary
    if "image" not in runner.skip_jobs:
        # 7: built from the wheelhouse made already (the session's); with no registry here the
        # default base cannot be pulled, and the retry builds on the fallback base, which it
        # finds made (the session's) instead of running rootfs.sh again
        tag, base = runner.workflow["env"]["CI_IMAGE_TAG"], runner.overrides["CI_FALLBACK_BASE"]
        assert f"the wheelhouse made already: {runner.overrides['CI_WHEEL_DIR']}" in out["image"]
        assert f"**image build**: built {tag}" in summary
        if "the build failed (exit" in out["image"]:
            retried = re.escape(f"the retry on {base} passed")
            healed = rf"self-healed: the first build failed \(exit \d+\), {retried}"
            assert re.search(healed, summary), summary
            assert "building a Debian bookworm root filesystem" not in out["image"]
            assert on_fallback, f"{tag} is not built on {base}"
        else:
            print(f"a registry is reachable: {tag} was built on the default base, no retry")
    # 8: the stages and the self-healing metrics, as tables
    assert "| summary |" not in summary  # the summary job lists the stages it needs
    for job in runner.workflow["jobs"]:
        if job != "summary":
            assert f"| {job} | {expected[job]} |" in summary
    assert "## Self-healing metrics (`selfheal report --json`)" in summary
    assert "| metric | value |" in summary
    rollbacks = re.search(r"\| rollbacks \| (\d+) \|", summary)
    assert rollbacks is not None
    assert int(rollbacks.group(1)) >= 1
    assert "| drills | 1 |" in summary  # the crash drill, counted apart from real incidents

    cfg = load_config(state / "config.toml")
    assert cfg.state_dir == state
    assert cfg.service.host == "127.0.0.1"
    kinds = {(r["issue"], r["detection"], r["outcome"]) for r in read_records(state / "audit")}
    assert ("deployment_failure", "checksum_mismatch", "resolved") in kinds
    assert any(k[0] == "service_crash" and k[2] == "resolved" for k in kinds)


def test_the_train_stage_restores_the_registry_when_selfheal_once_fails(tmp_path: Path) -> None:
    """A ``selfheal`` that scribbles on the registry and exits 7 (a training error) stands in for a
    run that failed half-way: the stage exits 7 and the registry is the backup again."""
    state = tmp_path / "state"
    (state / "registry" / "v1").mkdir(parents=True)
    (state / "registry" / "v1" / "meta.json").write_text('{"version": "v1"}')
    (state / "registry" / "current").write_text("v1")
    shim = tmp_path / "bin" / "selfheal"
    shim.parent.mkdir()
    shim.write_text(
        "#!/bin/sh\n"
        'rm -f "$CI_STATE/registry/current"\n'
        'mkdir -p "$CI_STATE/registry/v2" && echo half > "$CI_STATE/registry/v2/model.joblib"\n'
        "echo 'training failed' >&2\nexit 7\n"
    )
    shim.chmod(0o755)
    workflow = load_workflow()
    job = workflow["jobs"]["train"]
    # only the stage's own step: the install steps are the other test's business
    job["steps"] = [s for s in job["steps"] if str(s.get("name", "")).startswith("Train")]
    workflow["jobs"] = {"train": job | {"needs": []}}
    runner = Runner(
        workflow,
        tmp_path,
        overrides={
            "CI_STATE": str(state),
            "SELFHEAL_CONFIG": str(state / "config.toml"),
            "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
        },
    )
    runner.run()
    assert runner.results == {"train": "failure"}
    assert [s.rc for s in runner.steps] == [7]
    assert "restoring the registry from the backup" in runner.steps[0].output
    assert sorted(p.name for p in (state / "registry").iterdir()) == ["current", "v1"]
    assert (state / "registry" / "current").read_text() == "v1"
    assert "the registry was restored from its backup" in runner.summary()
