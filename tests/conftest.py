"""Shared fixtures: a temporary state folder and the local stack built in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

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


def pytest_sessionfinish(session, exitstatus):
    """With GOVERNED_FT_FAIL_ON_SKIP=1 (CI where the jar mirror is present) a skipped test fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("GOVERNED_FT_FAIL_ON_SKIP") == "1" and skipped and exitstatus == 0:
        session.exitstatus = 1
        if reporter:
            reporter.write_line(f"{skipped} tests skipped while GOVERNED_FT_FAIL_ON_SKIP=1: failing the run", red=True)


@pytest.fixture(autouse=True, scope="session")
def _mlflow_outside_the_repository(tmp_path_factory):
    """MLflow's default store is ./mlflow.db; a test that forgets its own URI writes to a temporary one instead."""
    if "MLFLOW_TRACKING_URI" not in os.environ:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow-default') / 'mlflow.db'}"


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


@pytest.fixture
def running_stack(local_stack, uc_server_jars):
    """The local stack with its catalog server up (not bootstrapped); stopped afterwards."""
    link_group(local_stack.home, uc_server_jars, "uc-server")
    link_group(local_stack.home, uc_server_jars, "uc-spark")
    local_stack.up()
    yield local_stack
    local_stack.down()


@pytest.fixture
def edgar(tmp_path):
    """The shared real filings as a local EDGAR-shaped source."""
    from governed_ft_dagster.edgar.sample_corpus import mirror_shared_samples
    from governed_ft_dagster.defs.resources.edgar import EdgarResource

    root = tmp_path / "edgar"
    mirror_shared_samples(SHARED_SAMPLES, root)
    return EdgarResource(source="folder", cache_dir=str(tmp_path / "cache"), local_root=str(root))


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
def tiny_base(tmp_path_factory) -> Path:
    """The tiny Ministral3 base and its tokenizer, trained on the shared filings, once per session."""
    from lxml import html

    from governed_ft_dagster.training.base_model import build_tiny_base

    texts = [html.fromstring(p.read_bytes()).text_content() for p in sorted((SHARED_SAMPLES / "filings").glob("*.htm*"))]
    return build_tiny_base(texts, tmp_path_factory.mktemp("tiny-base") / "model")


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
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    shutil.rmtree(source)
    return venv / "bin"
