"""Shared fixtures: a temporary state folder and the local stack built in it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

import pytest

from governed_ft_dagster.settings import load_settings
from governed_ft_dagster.stack import jars
from governed_ft_dagster.stack.errors import StackError
from governed_ft_dagster.stack.local import LocalStack
from governed_ft_dagster.stack.server import free_port_pair

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLES = Path(os.environ.get("GOVERNED_FT_SEC_SAMPLES", REPO.parent / "shared" / "sec_samples"))


def free_port() -> int:
    """A loopback port whose successor is free too (the catalog binds PORT and PORT+1)."""
    return free_port_pair()


def tiny_lora_adapter(root: Path, corpus: list[str], seed: int, name: str) -> tuple[Path, Path]:
    """A tiny Ministral3 base and a randomly initialised LoRA adapter over the production module names."""
    import torch
    from peft import LoraConfig, get_peft_model

    from governed_ft_dagster.training.base_model import LORA_TARGET_MODULES, build_tiny_base, load_base_model

    base = build_tiny_base(corpus, root / "base", vocab_size=320)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGET_MODULES), init_lora_weights=False)
    get_peft_model(load_base_model(base), config).save_pretrained(root / name)
    return base, root / name


def pytest_addoption(parser):
    parser.addoption("--min-passed", type=int, default=0,
                     help="fail the run when fewer tests pass than this (CI's recorded test count)")
    parser.addoption("--slowest", type=int, default=0,
                     help="list the N slowest tests, set-up and tear-down included, at the end")


# The files that take longest start first, so that two workers finish together (xdist hands out whole files in
# collection order with --no-loadscope-reorder); the order is that of the files' measured times (the summary's
# "each worker's files" lines); the rest keep pytest's order.
LONG_FILES = ("test_pipeline_local.py", "test_pipeline_aws.py", "test_preprocess_spark.py", "test_staged_emr.py",
              "test_training.py", "test_base_model_families.py", "test_staged_sagemaker.py",
              "test_enforced_renewal.py", "test_distributed_training.py", "test_catalog_local.py",
              "test_curated_asset.py", "test_governance_local.py", "test_connector.py", "test_registry.py",
              "test_training_asset.py", "test_dagster_dev.py", "test_raw_asset_aws.py",
              "test_training_jobs_sagemaker.py", "test_model_asset.py", "test_spark_jobs_local.py", "test_processes.py",
              "test_edgar_replay.py", "test_provision_aws.py", "test_provision_catalog.py", "test_gates.py",
              "test_pipes_clients.py", "test_provenance.py", "test_definitions.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: place for place, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


_TEST_SECONDS: dict[str, float] = {}
_WORKER_SECONDS: dict[str, float] = {}
_WORKER_FILES: dict[str, dict[str, float]] = {}


def pytest_runtest_logreport(report):
    """Each test's whole time: set-up, call and tear-down (xdist sends every worker's reports here too)."""
    _TEST_SECONDS[report.nodeid] = _TEST_SECONDS.get(report.nodeid, 0.0) + report.duration
    worker = getattr(getattr(getattr(report, "node", None), "gateway", None), "id", "main")
    _WORKER_SECONDS[worker] = _WORKER_SECONDS.get(worker, 0.0) + report.duration
    files = _WORKER_FILES.setdefault(worker, {})
    path = report.nodeid.split("::", 1)[0]
    files[path] = files.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count = config.getoption("--slowest")
    if count and _TEST_SECONDS:
        terminalreporter.section(f"{count} slowest tests (set-up, call and tear-down)")
        for nodeid, seconds in sorted(_TEST_SECONDS.items(), key=lambda item: -item[1])[:count]:
            terminalreporter.write_line(f"{seconds:8.1f} s  {nodeid}")
        files: dict[str, float] = {}
        for nodeid, seconds in _TEST_SECONDS.items():
            files[nodeid.split("::", 1)[0]] = files.get(nodeid.split("::", 1)[0], 0.0) + seconds
        terminalreporter.section(f"{count} slowest files, and each worker's total")
        for path, seconds in sorted(files.items(), key=lambda item: -item[1])[:count]:
            terminalreporter.write_line(f"{seconds:8.1f} s  {path}")
        for worker, seconds in sorted(_WORKER_SECONDS.items()):
            terminalreporter.write_line(f"{seconds:8.1f} s  worker {worker}")
        terminalreporter.section("each worker's files, in the order it ran them")
        for worker, files in sorted(_WORKER_FILES.items()):
            terminalreporter.write_line(f"{worker}: " + ", ".join(
                f"{path.rsplit('/', 1)[-1].removesuffix('.py')} {seconds:.0f}" for path, seconds in files.items()))


def pytest_sessionfinish(session, exitstatus):
    """A skipped test fails the run where GOVERNED_FT_FAIL_ON_SKIP=1 (CI with the jar mirror); so does a passed
    count under --min-passed."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller sees every report and decides
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter else {}
    skipped = len(stats.get("skipped", []))
    passed = len([r for r in stats.get("passed", []) if getattr(r, "when", "call") == "call"])
    problems = []
    if os.environ.get("GOVERNED_FT_FAIL_ON_SKIP") == "1" and skipped:
        problems.append(f"{skipped} tests skipped while GOVERNED_FT_FAIL_ON_SKIP=1")
    floor = session.config.getoption("--min-passed")
    if floor and passed < floor:
        problems.append(f"{passed} tests passed, fewer than the {floor} recorded in .ci/test-count: a commit that "
                        f"removes tests lowers that number and says why")
    if problems and session.exitstatus == 0:
        session.exitstatus = 1
    for problem in problems:
        if reporter:
            reporter.write_line(f"{problem}: failing the run", red=True)


@pytest.fixture(autouse=True, scope="session")
def _mlflow_outside_the_repository(tmp_path_factory):
    """MLflow's default store is ./mlflow.db; a test that forgets its own URI writes to a temporary one instead."""
    if "MLFLOW_TRACKING_URI" not in os.environ:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow-default') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (`mlflow server`, sqlite store) that fake workspaces forward tracking to."""
    from fake_mlflow_tracking import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def stack_env(tmp_path, monkeypatch) -> dict[str, str]:
    """Environment for a local stack under a temporary state folder."""
    env = {"GOVERNED_FT_HOME": str(tmp_path / "state"), "GOVERNED_FT_UC_PORT": str(free_port()),
           "GOVERNED_FT_DEPLOYMENT": "local"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def local_stack(stack_env) -> LocalStack:
    return LocalStack(load_settings(stack_env))


@pytest.fixture(scope="session")
def uc_server_jars(tmp_path_factory) -> Path:
    """The catalog server's jars and its Spark connector's in one state folder, or a skip that says why not."""
    home = tmp_path_factory.mktemp("jar-cache")
    mirror = load_settings().jar_mirror
    try:
        jars.fetch_group(home, "uc-server", mirror=mirror)
        jars.fetch_group(home, "uc-spark", mirror=mirror)
    except StackError as exc:
        if mirror is not None:
            pytest.fail(f"GOVERNED_FT_JAR_MIRROR={mirror} is set but the catalog server's jars cannot be installed "
                        f"from it: {exc}")
        pytest.skip(f"the open-source catalog server cannot run here: {exc}")
    return home


def link_group(home: Path, cache: Path, group: str) -> None:
    """Use a jar group fetched once per session in another state folder."""
    target = jars.group_dir(home, group)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(jars.group_dir(cache, group))


class SharedServerStack(LocalStack):
    """A state folder of its own on the session's catalog server: starting or stopping that server is not its call."""

    def up(self) -> int:
        raise AssertionError("this stack shares the session's catalog server; use `private_stack` to start one")

    def down(self) -> bool:
        raise AssertionError("this stack shares the session's catalog server; use `private_stack` to stop one")


@pytest.fixture(scope="session")
def catalog_server(tmp_path_factory, uc_server_jars) -> Iterator[LocalStack]:
    """The catalog server of the whole session (of one xdist worker), started once; tests each use a catalog."""
    home = tmp_path_factory.mktemp("catalog-server")
    stack = LocalStack(load_settings({"GOVERNED_FT_HOME": str(home), "GOVERNED_FT_UC_PORT": str(free_port()),
                                      "GOVERNED_FT_DEPLOYMENT": "local"}))
    link_group(home, uc_server_jars, "uc-server")
    link_group(home, uc_server_jars, "uc-spark")
    stack.up()
    yield stack
    stack.down()


def catalog_for(nodeid: str) -> str:
    """A catalog name of the test's own, so tests on one server never see each other's securables."""
    return "t_" + hashlib.sha1(nodeid.encode()).hexdigest()[:12]


@pytest.fixture
def running_stack(request, tmp_path, monkeypatch, catalog_server) -> LocalStack:
    """A state folder and a catalog of the test's own on the session's catalog server (not bootstrapped).

    The folder links the server's files (its admin token, the key that signs principals' tokens) and jars; the
    server's users are shared, grants and tables are per catalog."""
    named = request.node.get_closest_marker("catalog")
    env = {"GOVERNED_FT_HOME": str(tmp_path / "state"), "GOVERNED_FT_UC_PORT": str(catalog_server.settings.uc_port),
           "GOVERNED_FT_DEPLOYMENT": "local",
           "GOVERNED_FT_CATALOG": named.args[0] if named else catalog_for(request.node.nodeid)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    stack = SharedServerStack(load_settings(env))
    stack.home.mkdir(parents=True)
    stack.server_paths.root.symlink_to(catalog_server.server_paths.root, target_is_directory=True)
    for group in ("uc-server", "uc-spark"):
        link_group(stack.home, catalog_server.home, group)
    for directory in (stack.warehouse, stack.mlflow_dir / "artifacts", stack.home / "tokens"):
        directory.mkdir(parents=True, exist_ok=True)
    stack.init_mlflow()
    return stack


@pytest.fixture
def edgar(tmp_path):
    """The shared real filings as a local EDGAR-shaped source."""
    from governed_ft_dagster.edgar.sample_corpus import mirror_shared_samples
    from governed_ft_dagster.defs.resources.edgar import EdgarResource

    root = tmp_path / "edgar"
    mirror_shared_samples(SHARED_SAMPLES, root)
    return EdgarResource(source="folder", cache_dir=str(tmp_path / "cache"), local_root=str(root))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny Ministral3 base with a tokenizer trained on the shared real filings, built once per session."""
    from lxml import html

    from governed_ft_dagster.training.base_model import build_tiny_base

    texts = [html.fromstring(p.read_bytes()).text_content() for p in sorted((SHARED_SAMPLES / "filings").glob("*.htm*"))]
    return build_tiny_base(texts, tmp_path_factory.mktemp("tiny-base") / "model")


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory) -> Path:
    """A state folder with the Spark jar groups (Delta; the EMR release's Hadoop, S3A and SDK v2) and the S3A
    credentials provider built from source, once per session. In-process Spark runs on the release's Hadoop too:
    one JVM serves every session of a test process, so each starts from this Spark home."""
    from governed_ft_dagster.stack import spark_runtime

    home = tmp_path_factory.mktemp("spark-home")
    jars.fetch_groups(home, ("spark", "hadoop", "s3a"), mirror=load_settings().jar_mirror)
    spark_runtime.credentials_provider_jar(home)
    os.environ["SPARK_HOME"] = str(spark_runtime.spark_home(home, s3a=True))
    return home


@pytest.fixture(scope="session")
def in_process_spark_jars(spark_home, tmp_path_factory) -> list[Path]:
    """Every jar an in-process Spark of this test process may need. The first SparkSession launches the one JVM with
    its spark.jars, and a later session in the same process cannot add to the driver's class path, so every module
    that starts one asks for all of them: Delta and S3A, the catalog's connector where it can be had, the provider."""
    from governed_ft_dagster.stack import spark_runtime

    home = tmp_path_factory.mktemp("in-process-spark-jars")
    try:
        jars.fetch_group(home, "uc-spark", mirror=load_settings().jar_mirror)
        connector = jars.classpath(home, "uc-spark")
    except StackError:
        connector = []  # the connector's own tests fail or skip on it, saying why
    return [*jars.classpath(spark_home, "spark"), *connector, spark_runtime.credentials_provider_jar(spark_home)]


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory) -> Path:
    """The bin folder of a fresh venv holding the project installed from its wheel, not from this checkout.

    Its third-party packages are this venv's (a path entry, so this venv's editable hook is not loaded): the test
    is about the project's own files travelling in the wheel, not about downloading torch again."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", ".governed_ft", "__pycache__",
                                                                "*.egg-info", "build", "dist", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    [wheel] = (root / "dist").glob("governed_ft_dagster-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    own = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # nothing from a checkout
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=600, env=own)
    shutil.rmtree(source)
    return venv / "bin"


@pytest.fixture(scope="session")
def build_cache() -> Path:
    """Builds that outlive a session, by content: the training container's interpreter, the staged environments."""
    from job_runtimes import build_cache_root

    return build_cache_root()


@pytest.fixture(scope="session")
def container_python(build_cache) -> str:
    """The training container's CPython and torch (from the package index) in a venv, and nothing else."""
    from job_runtimes import container_python as build

    try:
        return str(build(build_cache))
    except RuntimeError as exc:
        pytest.fail(str(exc))
