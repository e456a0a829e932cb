"""The recipes in jobs/ do what the README promises: a retry resumes, a rerun of a
finished output prints `Already complete`, nothing ever passes `--overwrite`, and
sharded runs are finalized whatever the shards' outcome, naming any shard to rerun.

Fast tests check each file (shellcheck, the crontab's syntax, the Kubernetes
manifest) and run the Slurm scripts and the cron lines for real, with a tiny model.
The slow ones install Apache Airflow 3 (and kubernetes-validate) into side
virtualenvs under ~/.cache/batchscore-test-*/ (reused; a failed install skips)
and run both DAGs with `airflow dags test` on SQLite, offline.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"
VENV = Path(sys.prefix)  # BATCHSCORE_VENV for the Slurm scripts: the environment under test
# The batchscore under test: the command beside this Python (the project's .venv), else the one on PATH.
BATCHSCORE = Path(sys.executable).parent / "batchscore"
if not BATCHSCORE.exists() and shutil.which("batchscore"):
    BATCHSCORE = Path(shutil.which("batchscore"))
ROWS = 25
CHUNK_ROWS = 5  # 5 chunks: shards of 3 get 2, 2 and 1


def job_files() -> list[Path]:
    return sorted(p for p in JOBS.iterdir() if p.is_file())


def clean_env(**extra) -> dict[str, str]:
    """This process's environment without any BATCHSCORE_*/AIRFLOW*/SLURM_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHSCORE_", "AIRFLOW", "SLURM_"))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_input(path: Path) -> Path:
    """A small CSV whose ids must come back as written, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review_id", "text"])
        for i in range(ROWS):
            text = "" if i == 7 else f"Review {i}: " + ('great, "really" great' if i % 2 else "awful,\nsadly")
            writer.writerow([f"{i:03d}", text])
    return path


def assert_complete(out: Path) -> None:
    assert (out / "_SUCCESS").is_file(), sorted(p.name for p in out.iterdir()) if out.exists() else out
    table = pq.read_table(out).to_pydict()
    assert table["review_id"] == [f"{i:03d}" for i in range(ROWS)]
    assert [label is None for label in table["label"]] == [i == 7 for i in range(ROWS)]


def snapshot(out: Path) -> dict[str, tuple]:
    """Every file below `out`: size, content hash and modification time."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            st = path.stat()
            found[str(path.relative_to(out))] = (
                st.st_size,
                hashlib.sha256(path.read_bytes()).hexdigest(),
                st.st_mtime_ns,
            )
    return found


# ---------------------------------------------------------------- every recipe


def test_no_recipe_overwrites():
    """A scheduled retry must resume and a rerun must do nothing: no recipe replaces an output."""
    files = job_files()
    assert {p.name for p in files} >= {
        "airflow_dag.py",
        "airflow_sharded_dag.py",
        "airflow_delta_merge_dag.py",
        "crontab.example",
        "slurm_array.sh",
        "slurm_finalize.sh",
        "slurm_submit.sh",
        "k8s_indexed_job.yaml",
    }
    for path in files:
        text = path.read_text()
        assert "--overwrite" not in text, path
        assert "BATCHSCORE_OVERWRITE" not in text, path


# ---------------------------------------------------------------- Slurm


def test_shell_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    scripts = sorted(JOBS.glob("*.sh"))
    result = subprocess.run(["shellcheck", "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_slurm_finalize_runs_afterany():
    """Finalize runs whatever the array's outcome, so a failed shard is named, never silently waited on."""
    submit = (JOBS / "slurm_submit.sh").read_text()
    assert re.search(r'--dependency="?afterany:\$jid"?', submit), submit
    for path in JOBS.glob("slurm_*.sh"):
        text = path.read_text()
        assert not re.search(r"dependency[= ]\S*after(ok|notok)", text), path
        assert os.access(path, os.X_OK), f"{path} is not executable"
    assert "--dependency=afterany:$jid jobs/slurm_finalize.sh" in (JOBS / "slurm_array.sh").read_text()


def test_slurm_submit_submits_array_then_finalize_afterany(tmp_path):
    """slurm_submit.sh, against a fake sbatch that records its arguments."""
    log = tmp_path / "sbatch.log"
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$*" >> "$SBATCH_LOG"\nn=$(wc -l < "$SBATCH_LOG")\necho "$((100 + n));cluster1"\n')
    fake.chmod(0o755)
    env = clean_env(PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}", SBATCH_LOG=log, BATCHSCORE_NUM_SHARDS=3)

    result = subprocess.run(["bash", JOBS / "slurm_submit.sh"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    array, finalize = log.read_text().splitlines()
    assert "--array=0-2" in array.split() and array.endswith("/slurm_array.sh"), array
    assert "--dependency=afterany:101" in finalize.split() and finalize.endswith("/slurm_finalize.sh"), finalize
    assert "finalize job 102" in result.stdout, result.stdout

    log.unlink()
    result = subprocess.run(["bash", JOBS / "slurm_submit.sh", "1"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    array, finalize = log.read_text().splitlines()
    assert "--array=1" in array.split(), array
    assert "--dependency=afterany:101" in finalize.split(), finalize


def test_slurm_flow_rerun_one_shard_then_finalize(tiny_model, tmp_path):
    """The array's tasks 0 and 2 of 3 succeed, task 1 never ran: finalize (afterany) exits 5 naming shard 1
    and writes nothing; `sbatch --array=1` (task 1 alone) and finalize again complete the output."""
    if not (VENV / "bin" / "python").exists():
        pytest.skip(f"no {VENV}/bin/python for BATCHSCORE_VENV")
    data = write_input(tmp_path / "in" / "reviews.csv")
    out = tmp_path / "scored"
    env = clean_env(
        BATCHSCORE_VENV=VENV,
        BATCHSCORE_INPUT=data,
        BATCHSCORE_OUTPUT=out,
        BATCHSCORE_NUM_SHARDS=3,
        BATCHSCORE_MODEL=tiny_model,
        BATCHSCORE_CHUNK_ROWS=CHUNK_ROWS,
        BATCHSCORE_THREADS=1,
    )

    def task(index):
        return subprocess.Popen(
            ["bash", JOBS / "slurm_array.sh"],
            env={**env, "SLURM_ARRAY_TASK_ID": str(index)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finalize():
        return subprocess.run(["bash", JOBS / "slurm_finalize.sh"], env=env, capture_output=True, text=True)

    tasks = {i: task(i) for i in (0, 2)}  # side by side, as array tasks run
    for i, proc in tasks.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, (i, stderr)
        assert f"Shard {i} of 3" in stderr, stderr

    missing = finalize()
    assert missing.returncode == 5, missing.stderr
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "missing 2 of 5 chunks (1, 4)" in lines[0], lines[0]
    assert "rerun shard 1 of 3 (--num-shards 3 --shard-index 1), then finalize again" in lines[0], lines[0]
    assert not (out / "_SUCCESS").exists() and not (out / "_manifest.parquet").exists()

    rerun = task(1)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr

    done = finalize()
    assert done.returncode == 0, done.stderr
    assert "Finalized" in done.stderr and f"{ROWS} rows" in done.stderr, done.stderr
    assert_complete(out)

    before = snapshot(out)
    again = finalize()
    assert again.returncode == 0 and "Already complete" in again.stderr, again.stderr
    assert snapshot(out) == before


# ---------------------------------------------------------------- cron

CRON_FIELD = re.compile(r"^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$")
CRON_ENV = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def read_crontab(path: Path) -> tuple[dict[str, str], list[tuple[list[str], str]]]:
    """(environment lines, entries as 5 time fields and a command), the way cron reads them."""
    env, entries = {}, []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assignment = CRON_ENV.match(line)
        if assignment:
            env[assignment.group(1)] = assignment.group(2).strip()
            continue
        parts = line.split(None, 5)
        assert len(parts) == 6, f"not 5 time fields and a command: {line!r}"
        entries.append((parts[:5], parts[5]))
    return env, entries


def cron_command(command: str) -> str:
    """What cron hands to the shell: an unescaped % ends the command; \\% is a literal %."""
    assert re.search(r"(?<!\\)%", command) is None, f"unescaped % in a crontab command: {command!r}"
    return command.replace("\\%", "%")


def test_crontab_lines_parse():
    env, entries = read_crontab(JOBS / "crontab.example")
    assert env.get("MAILTO"), "MAILTO: cron mails a failure's one line"
    assert entries
    limits = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    for fields, command in entries:
        for field, (low, high) in zip(fields, limits):
            assert CRON_FIELD.match(field), (field, fields)
            for number in re.findall(r"(?<![/0-9])[0-9]+", field):
                assert low <= int(number) <= high, (field, fields)
        cron_command(command)
        assert "--overwrite" not in command
        args = shlex.split(command)
        assert "--quiet" in args, command  # nothing on success: cron mails only failures
        assert "score" in args, command


def test_crontab_lines_are_silent_on_success_and_one_line_on_failure(tiny_model, tmp_path):
    """Each crontab line, run as cron runs it (sh -c, the crontab's variables): nothing printed on success
    nor on the later rerun (already complete, output unchanged); one `Error:` line when the day's input is
    missing."""
    env, entries = read_crontab(JOBS / "crontab.example")
    day = subprocess.run(["date", "-d", "yesterday", "+%F"], capture_output=True, text=True, check=True).stdout.strip()
    write_input(tmp_path / "in" / day / "reviews.csv")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": str(tiny_model), "chunk_rows": CHUNK_ROWS, "threads": 1}))
    env = clean_env(**{k: v for k, v in env.items() if k != "MAILTO"})
    env.update(
        BATCHSCORE=str(BATCHSCORE),
        CONFIG=str(config),
        INPUT_ROOT=str(tmp_path / "in"),
        OUTPUT_ROOT=str(tmp_path / "out"),
    )
    shell = env.pop("SHELL", "/bin/sh")

    def run(command, **overrides):
        return subprocess.run(
            [shell, "-c", cron_command(command)], env={**env, **overrides}, capture_output=True, text=True, timeout=300
        )

    assert len(entries) >= 2, "a night run and a later rerun of the same day"
    first = run(entries[0][1])
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    out = tmp_path / "out" / day
    assert_complete(out)
    before = snapshot(out)
    for _, command in entries[1:]:
        again = run(command)
        assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert snapshot(out) == before

    failed = run(entries[0][1], INPUT_ROOT=str(tmp_path / "late"))
    assert failed.returncode == 3 and failed.stdout == "", failed
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Input "), lines


# ---------------------------------------------------------------- Kubernetes


def k8s_jobs() -> tuple[dict, dict]:
    docs = [d for d in yaml.safe_load_all((JOBS / "k8s_indexed_job.yaml").read_text()) if d]
    assert all(d["apiVersion"] == "batch/v1" and d["kind"] == "Job" for d in docs), docs
    indexed = [d for d in docs if d["spec"].get("completionMode") == "Indexed"]
    others = [d for d in docs if d["spec"].get("completionMode") != "Indexed"]
    assert len(indexed) == 1 and len(others) == 1, [d["metadata"]["name"] for d in docs]
    return indexed[0], others[0]


def option(args: list[str], name: str) -> str:
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {args}")


def test_k8s_indexed_job():
    shards, finalize = k8s_jobs()
    spec = shards["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    args = container["command"][1:] + container["args"]
    assert args[0] == "score"
    assert spec["completions"] == int(option(args, "--num-shards"))  # one index per shard
    assert 1 <= spec["parallelism"] <= spec["completions"]
    assert spec["backoffLimitPerIndex"] >= 1  # a failed shard is retried alone
    assert pod["restartPolicy"] == "Never"
    # The shard index is the pod's completion index.
    index = option(args, "--shard-index")
    env = {e["name"]: e for e in container.get("env", [])}
    assert index in ("$(JOB_COMPLETION_INDEX)", "$(BATCHSCORE_SHARD_INDEX)"), index
    if index == "$(BATCHSCORE_SHARD_INDEX)":
        assert (
            env["BATCHSCORE_SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
            == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        )
    # Errors a retry cannot fix fail the index at once; success (0) is never a failure code.
    for rule in spec.get("podFailurePolicy", {}).get("rules", []):
        codes = rule.get("onExitCodes", {}).get("values", [])
        assert 0 not in codes and codes == sorted(codes), rule
        if rule["action"] == "FailIndex":
            assert set(codes) <= {1, 2, 3, 4}, rule  # 5 (another live run) and 130 (SIGTERM) are retried

    # The finalize Job finishes the same output, once started after the shards.
    (fin,) = finalize["spec"]["template"]["spec"]["containers"]
    fin_args = fin["command"][1:] + fin["args"]
    assert fin_args[:2] == ["finalize", option(args, "--output")]
    assert finalize["spec"]["suspend"] is True
    assert finalize["spec"]["template"]["spec"]["restartPolicy"] == "Never"


# ---------------------------------------------------------------- side virtualenvs (slow tests)


INSTALL_TIMEOUT = float(os.environ.get("BATCHSCORE_TEST_INSTALL_TIMEOUT", 900))  # seconds, then skip


def side_venv(name: str, requirements: list[str], timeout: float) -> tuple[Path, float | None]:
    """A virtualenv under ~/.cache/batchscore-test-NAME/venv with `requirements`, built once and reused.

    Returns its bin folder and the install time in seconds (None when reused); skips the test when
    the install fails or takes longer than `timeout`.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / f"batchscore-test-{name}"
    venv = cache / "venv"
    stamp = venv / ".installed"
    wanted = "\n".join(requirements)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time, across test processes
        if stamp.is_file() and stamp.read_text() == wanted and (venv / "bin" / "python").exists():
            return venv / "bin", None
        shutil.rmtree(venv, ignore_errors=True)
        start = time.monotonic()
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True, timeout=timeout
            )
            subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *requirements,
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=max(1.0, timeout - (time.monotonic() - start)),
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(f"installing {' '.join(requirements)} took over {timeout:.0f}s")
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(f"could not install {' '.join(requirements)}: {(exc.stderr or '').strip()[-800:]}")
        stamp.write_text(wanted)
        return venv / "bin", time.monotonic() - start


@pytest.mark.slow
def test_k8s_manifest_validates_against_the_job_schema():
    """Both Jobs against the Kubernetes OpenAPI schemas (strict: no unknown field), 1.29 to the newest."""
    bin_dir, _ = side_venv("k8s", ["kubernetes-validate"], timeout=INSTALL_TIMEOUT)
    for version in ("1.29.0", None):
        cmd = [str(bin_dir / "kubernetes-validate"), "--strict", "--quiet"] + (["-k", version] if version else [])
        result = subprocess.run([*cmd, str(JOBS / "k8s_indexed_job.yaml")], capture_output=True, text=True)
        assert result.returncode == 0, (version, result.stdout, result.stderr)


# ---------------------------------------------------------------- Airflow (slow)

AIRFLOW = ["apache-airflow>=3"]
DATA_DAY = "2026-01-01"  # the partition a run with logical date 2026-01-02 scores: data_interval_start
LOGICAL_DATE = "2026-01-02"

WARNINGS_SCRIPT = """
import json, runpy, sys, warnings
import airflow.sdk, airflow.providers.standard.operators.bash  # noqa: F401 (their own warnings are not ours)
found = []
for path in sys.argv[1:]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runpy.run_path(path, run_name="dag_file_under_test")
    found += [{"file": path, "category": w.category.__name__, "message": str(w.message),
               "where": f"{w.filename}:{w.lineno}",
               "deprecation": issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))}
              for w in caught]
print(json.dumps(found))
"""


class Airflow:
    """`airflow` commands against one AIRFLOW_HOME (SQLite), with the DAGs' settings in the environment."""

    def __init__(self, bin_dir: Path, home: Path, **env):
        self.bin, self.home, self.dags = bin_dir, home, home / "dags"
        self.dags.mkdir(parents=True)
        # No batchscore on PATH: the DAGs must run the one BATCHSCORE_BIN names.
        path = os.pathsep.join(
            p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not (Path(p) / "batchscore").exists()
        )
        self.env = clean_env(
            AIRFLOW_HOME=home,
            AIRFLOW__CORE__DAGS_FOLDER=self.dags,
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            PATH=path,
            **env,
        )
        self.timings: dict[str, float] = {}  # seconds per command, for the report

    def run(self, *args, timeout=600, check=True, **env) -> subprocess.CompletedProcess:
        start = time.monotonic()
        try:
            result = subprocess.run(
                [str(self.bin / "airflow"), *args],
                env={**self.env, **env},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
            raise AssertionError(f"airflow {' '.join(args)} ran past {timeout}s:\n{tail[-6000:]}") from None
        label = " ".join(a for a in args[:3] if not a.startswith("-"))
        runs = sum(1 for k in self.timings if k.split(" #")[0] == label)
        self.timings[f"{label} #{runs + 1}" if runs else label] = time.monotonic() - start
        if check:
            assert result.returncode == 0, f"airflow {' '.join(args)}:\n{(result.stdout + result.stderr)[-6000:]}"
        return result

    def dags_test(self, dag_id, *extra, succeeds=True, **env) -> str:
        """The log of `airflow dags test DAG_ID LOGICAL_DATE`, which must succeed (or fail)."""
        result = self.run("dags", "test", dag_id, LOGICAL_DATE, *extra, check=succeeds, **env)
        log = result.stdout + result.stderr
        assert succeeds or result.returncode != 0, log[-6000:]
        own = [line for line in log.splitlines() if "py.warnings" in line and str(self.dags) in line]
        assert not own, "warnings from the DAG files:\n" + "\n".join(own)
        return log


def json_output(stdout: str):
    """The JSON of an `airflow ... -o json` command; other lines (warnings) come before it."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(("[", "{")):
            return json.loads(line)
    raise AssertionError(f"no JSON in {stdout!r}")


@pytest.mark.slow
def test_airflow_dags(tiny_model, tmp_path):
    """Both DAGs under Airflow 3 (`airflow dags test`, SQLite, offline), calling the batchscore under test.

    One task: scores the day before the logical date, every row, `_SUCCESS`; the same test again prints
    `Already complete` and changes nothing. Sharded (3 mapped tasks via the num_shards Param, then
    finalize): the same. Then a sharded run whose shard 1 fails: finalize still runs (all_done), fails and
    names shard 1; the next run resumes and completes the output.
    """
    bin_dir, install_s = side_venv("airflow", AIRFLOW, timeout=INSTALL_TIMEOUT)
    version = subprocess.run(
        [str(bin_dir / "python"), "-c", "import airflow; print(airflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert int(version.split(".")[0]) >= 3, version

    write_input(tmp_path / "in" / DATA_DAY / "reviews.csv")
    af = Airflow(
        bin_dir,
        tmp_path / "airflow",
        BATCHSCORE_BIN=BATCHSCORE,
        BATCHSCORE_INPUT_ROOT=tmp_path / "in",
        BATCHSCORE_MODEL=tiny_model,
        BATCHSCORE_CHUNK_ROWS=CHUNK_ROWS,
    )
    af.run("db", "migrate")
    for name in ("airflow_dag.py", "airflow_sharded_dag.py"):
        shutil.copy(JOBS / name, af.dags / name)

    errors = json_output(af.run("dags", "list-import-errors", "--local", "-o", "json").stdout)
    assert errors == [], errors
    dag_ids = {d["dag_id"] for d in json_output(af.run("dags", "list", "--local", "-o", "json").stdout)}
    assert dag_ids == {"batchscore_reviews", "batchscore_reviews_sharded"}, dag_ids
    warned = json.loads(
        subprocess.run(
            [str(bin_dir / "python"), "-c", WARNINGS_SCRIPT, *map(str, sorted(af.dags.glob("*.py")))],
            env=af.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert warned == [], warned

    # One task.
    out = tmp_path / "scored"
    log = af.dags_test("batchscore_reviews", BATCHSCORE_OUTPUT_ROOT=out)
    assert f"Scored {ROWS - 1} of {ROWS} rows" in log, log[-4000:]
    assert_complete(out / DATA_DAY)
    assert sorted(p.name for p in out.iterdir()) == [DATA_DAY]
    before = snapshot(out)
    log = af.dags_test("batchscore_reviews", BATCHSCORE_OUTPUT_ROOT=out)
    assert "Already complete" in log, log[-4000:]
    assert snapshot(out) == before

    # K mapped shards, then finalize.
    sharded = tmp_path / "scored-sharded"
    conf = ("-c", json.dumps({"num_shards": 3}))
    log = af.dags_test("batchscore_reviews_sharded", *conf, BATCHSCORE_OUTPUT_ROOT=sharded)
    for i in range(3):
        assert f"Shard {i} of 3" in log, log[-4000:]
    assert f"Finalized {sharded / DATA_DAY}: {ROWS - 1} of {ROWS} rows scored, in {ROWS // CHUNK_ROWS} chunks" in log
    assert_complete(sharded / DATA_DAY)
    before = snapshot(sharded)
    log = af.dags_test("batchscore_reviews_sharded", *conf, BATCHSCORE_OUTPUT_ROOT=sharded)
    assert log.count("Already complete") == 4, log[-4000:]  # 3 shards and finalize
    assert snapshot(sharded) == before

    # A shard that fails for good: finalize runs anyway and names it; the next run completes the output.
    # (The DAG's retries wait 10 minutes; this copy has none, and nothing else differs.)
    text = (JOBS / "airflow_sharded_dag.py").read_text()
    assert text.count('"retries": 2') == 1
    (af.dags / "airflow_sharded_dag.py").write_text(text.replace('"retries": 2', '"retries": 0'))
    flag = tmp_path / "fail-shard-1"
    flag.touch()
    wrapper = tmp_path / "batchscore-failing-shard-1"
    wrapper.write_text(
        f'#!/bin/sh\nif [ "${{SHARD_INDEX:-}}" = 1 ] && [ -e {shlex.quote(str(flag))} ]; then\n'
        f'  echo "Error: simulated failure of shard 1" >&2; exit 5\nfi\n'
        f'exec {shlex.quote(str(BATCHSCORE))} "$@"\n'
    )
    wrapper.chmod(0o755)
    failing = tmp_path / "scored-failing"
    log = af.dags_test(
        "batchscore_reviews_sharded", *conf, succeeds=False, BATCHSCORE_OUTPUT_ROOT=failing, BATCHSCORE_BIN=wrapper
    )
    assert "simulated failure of shard 1" in log
    assert "rerun shard 1 of 3 (--num-shards 3 --shard-index 1), then finalize again" in log, log[-4000:]
    assert not (failing / DATA_DAY / "_SUCCESS").exists()
    flag.unlink()
    log = af.dags_test("batchscore_reviews_sharded", *conf, BATCHSCORE_OUTPUT_ROOT=failing, BATCHSCORE_BIN=wrapper)
    assert "Shard 1 of 3" in log and "Finalized" in log, log[-4000:]
    assert_complete(failing / DATA_DAY)

    timings = {
        "airflow": version,
        "pip install (s)": None if install_s is None else round(install_s, 1),
        **{k + " (s)": round(v, 1) for k, v in af.timings.items()},
    }
    print("\nAirflow timings:", json.dumps(timings))


def write_export(folder: Path, rows: dict[int, str]) -> None:
    """The export as the upstream job leaves it each night: one Parquet file, rewritten in place."""
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    pq.write_table(
        pa.table({"id": pa.array(list(rows), pa.int64()), "text": list(rows.values())}), folder / "part.parquet"
    )


@pytest.mark.slow
def test_airflow_delta_merge_dag(tiny_model, tmp_path):
    """jobs/airflow_delta_merge_dag.py under Airflow 3 (`airflow dags test`, SQLite, offline): night 1 merges an
    export of ids 0..29 into a new Delta table (one commit); night 2's export is the whole current state, ids
    0..39 with 20..29 rewritten: one more commit, rows 0..19 as they were, 20..29 rescored, 30..39 inserted, and
    the cache scored only the 20 new or changed texts; night 2 again commits nothing; version 0 is still night 1.
    """
    deltalake = pytest.importorskip("deltalake")
    bin_dir, install_s = side_venv("airflow", AIRFLOW, timeout=INSTALL_TIMEOUT)
    export, table, cache = tmp_path / "export", tmp_path / "lake" / "reviews_scored", tmp_path / "cache"
    af = Airflow(
        bin_dir,
        tmp_path / "airflow",
        BATCHSCORE_BIN=BATCHSCORE,
        BATCHSCORE_EXPORT=export,
        BATCHSCORE_TABLE=table,
        BATCHSCORE_CACHE=cache,
        BATCHSCORE_MODEL=tiny_model,
        BATCHSCORE_CHUNK_ROWS=CHUNK_ROWS,
    )
    af.run("db", "migrate")
    shutil.copy(JOBS / "airflow_delta_merge_dag.py", af.dags / "airflow_delta_merge_dag.py")
    errors = json_output(af.run("dags", "list-import-errors", "--local", "-o", "json").stdout)
    assert errors == [], errors
    dag_ids = {d["dag_id"] for d in json_output(af.run("dags", "list", "--local", "-o", "json").stdout)}
    assert dag_ids == {"batchscore_delta_merge"}, dag_ids
    warned = subprocess.run(
        [str(bin_dir / "python"), "-c", WARNINGS_SCRIPT, str(af.dags / "airflow_delta_merge_dag.py")],
        env=af.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(warned) == [], warned

    def nightly(date: str) -> str:
        result = af.run("dags", "test", "batchscore_delta_merge", date)
        log = result.stdout + result.stderr
        own = [line for line in log.splitlines() if "py.warnings" in line and str(af.dags) in line]
        assert not own, "warnings from the DAG file:\n" + "\n".join(own)
        return log

    def rows(version=None) -> dict[int, dict]:
        found = deltalake.DeltaTable(str(table), version=version).to_pyarrow_table().to_pylist()
        by_id = {row["id"]: row for row in found}
        assert len(by_id) == len(found), "an id twice in the table"
        return by_id

    def commits() -> list[dict]:
        return [h for h in deltalake.DeltaTable(str(table)).history() if "batchscore.commit" in h]

    def manifest() -> dict:
        result = subprocess.run(
            [str(BATCHSCORE), "manifest", str(table), "--output-format", "delta"],
            env=clean_env(),
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    # Night 1: a new table.
    first = {i: f"Review {i}: " + ("great, really great" if i % 2 else "awful, sadly") for i in range(30)}
    write_export(export, first)
    log = nightly("2026-01-02")
    assert "Scored 30 of 30 rows" in log and "delta version 0, merge" in log, log[-4000:]
    night1 = rows()
    assert sorted(night1) == list(range(30))
    assert {i: r["text"] for i, r in night1.items()} == first
    assert all(r["label"] and r["score"] is not None for r in night1.values())
    assert len(commits()) == 1 and deltalake.DeltaTable(str(table)).version() == 0
    m = manifest()
    assert (m["rows"], m["rows_from_cache"], m["distinct_texts_scored"]) == (30, 0, 30), m
    assert not (table / "_batchscore_staging").exists()

    # Night 2: the whole current export, ids 0..39; 20..29 have new texts, 30..39 are new rows.
    second = (
        {i: first[i] for i in range(20)}
        | {i: f"Review {i}, edited: the replacement broke in a week" for i in range(20, 30)}
        | {i: f"Review {i}: new today, " + ("lovely" if i % 2 else "meh") for i in range(30, 40)}
    )
    write_export(export, second)
    log = nightly("2026-01-03")
    assert "20 from the cache, 20 texts run" in log and "delta version 1, merge" in log, log[-4000:]
    night2 = rows()
    assert sorted(night2) == list(range(40))
    assert {i: r["text"] for i, r in night2.items()} == second
    assert all(night2[i] == night1[i] for i in range(20)), "rows 0..19 changed"
    assert all(night2[i]["score"] != night1[i]["score"] for i in range(20, 30)), "rows 20..29 not rescored"
    assert all(night2[i]["label"] and night2[i]["score"] is not None for i in range(20, 40))
    assert [c["version"] for c in commits()] == [1, 0]
    m = manifest()
    assert (m["rows"], m["rows_from_cache"], m["distinct_texts_scored"]) == (40, 20, 20), m
    assert m["table"]["version"] == 1 and m["table"]["mode"] == "merge", m["table"]
    assert m["table"]["commit"] == commits()[0]["batchscore.commit"]

    # Night 2 again (a clear, a rerun): already in the table, nothing committed.
    log = nightly("2026-01-03")
    assert "Already in the table" in log and "delta version 1, merge" in log, log[-4000:]
    assert deltalake.DeltaTable(str(table)).version() == 1 and len(commits()) == 2
    assert rows() == night2

    # Time travel: version 0 is still night 1.
    assert rows(version=0) == night1
    previous = deltalake.DeltaTable(str(table))
    previous.load_as_version(commits()[1]["version"])  # as the DAG's docstring shows
    assert {r["id"]: r["text"] for r in previous.to_pyarrow_table().to_pylist()} == first

    timings = {
        "pip install (s)": None if install_s is None else round(install_s, 1),
        **{k + " (s)": round(v, 1) for k, v in af.timings.items()},
    }
    print("\nAirflow delta merge timings:", json.dumps(timings))
