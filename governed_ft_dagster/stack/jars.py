"""Fetch pinned jars from Maven Central into the state folder, so later steps run offline."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from governed_ft_dagster.stack.errors import StackError
from governed_ft_dagster.stack.versions import JAR_GROUPS, Artifact

MARKER = ".complete"
_MISSING = re.compile(r"(?:Could not find artifact|Could not resolve dependencies for project [^:]+:[^:]+:[^:]+:[^:]+: (?:The following artifacts could not be resolved: )?)\s*([\w.\-]+:[\w.\-]+:[\w.\-]+(?::[\w.\-]+)?)")


@dataclass(frozen=True)
class JarGroupStatus:
    """What is present of one jar group."""

    name: str
    directory: Path
    complete: bool
    jars: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"directory": str(self.directory), "complete": self.complete, "jar_count": len(self.jars)}


def group_dir(home: Path, group: str) -> Path:
    return home / "jars" / group


def group_status(home: Path, group: str) -> JarGroupStatus:
    directory = group_dir(home, group)
    jars = tuple(sorted(p.name for p in directory.glob("*.jar"))) if directory.is_dir() else ()
    return JarGroupStatus(group, directory, (directory / MARKER).exists() and bool(jars), jars)


def classpath(home: Path, group: str) -> list[Path]:
    status = group_status(home, group)
    if not status.complete:
        raise StackError(
            f"the '{group}' jars are not in {status.directory}; run `governed-ft stack fetch` while Maven Central is reachable"
        )
    return [status.directory / name for name in status.jars]


def _pom(artifacts: tuple[Artifact, ...]) -> str:
    deps = []
    for a in artifacts:
        exclusions = (
            "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>"
            if not a.transitive
            else ""
        )
        deps.append(
            f"<dependency><groupId>{escape(a.group)}</groupId><artifactId>{escape(a.artifact)}</artifactId>"
            f"<version>{escape(a.version)}</version>{exclusions}</dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>governed-ft</groupId><artifactId>stack-jars</artifactId><version>1</version>"
        "<packaging>pom</packaging><dependencies>" + "".join(deps) + "</dependencies></project>"
    )


def copy_from_mirror(home: Path, group: str, mirror: Path) -> JarGroupStatus | None:
    """Install a group from a folder of pre-fetched jars (mirror/group/*.jar), for machines without Maven access."""
    source = mirror / group
    found = sorted(source.glob("*.jar")) if source.is_dir() else []
    if not found:
        return None
    target = group_dir(home, group)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{group}-") as tmp:
        staging = Path(tmp) / "jars"
        staging.mkdir()
        for jar in found:
            shutil.copy2(jar, staging / jar.name)
        (staging / MARKER).write_text(f"copied from {source}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return group_status(home, group)


def fetch_group(home: Path, group: str, mvn: str | None = None, timeout_s: float = 900,
                mirror: Path | None = None) -> JarGroupStatus:
    """Install one group from the jar mirror if it has it, else resolve it with Maven; a complete group is left alone."""
    return fetch_groups(home, (group,), mvn, timeout_s, mirror)[group]


def fetch_groups(home: Path, groups: tuple[str, ...], mvn: str | None = None, timeout_s: float = 900,
                 mirror: Path | None = None) -> dict[str, JarGroupStatus]:
    """fetch_group for several groups; the groups of single artifacts (no dependencies) that Maven must resolve share
    one Maven run, which costs a JVM start."""
    statuses: dict[str, JarGroupStatus] = {}
    together: list[str] = []
    for group in groups:
        current = group_status(home, group)
        if not current.complete and mirror is not None:
            current = copy_from_mirror(home, group, mirror) or current
        if current.complete:
            statuses[group] = current
        elif any(a.transitive for a in JAR_GROUPS[group]):
            statuses.update(_resolve(home, [group], mvn, timeout_s))
        else:
            together.append(group)
    if together:
        statuses.update(_resolve(home, together, mvn, timeout_s))
    return {group: statuses[group] for group in groups}


def _resolve(home: Path, groups: list[str], mvn: str | None, timeout_s: float) -> dict[str, JarGroupStatus]:
    """One Maven run for the groups' artifacts; each group gets its own folder (a group with dependencies is alone)."""
    artifacts = tuple(a for group in groups for a in JAR_GROUPS[group])
    label = "', '".join(groups)
    mvn = mvn or shutil.which("mvn")
    if not mvn:
        raise StackError(
            "Maven (mvn) is not on PATH; install it (`apt-get install -y maven`) so the stack can fetch its jars"
        )
    parent = group_dir(home, groups[0]).parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=f".{groups[0]}-") as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(_pom(artifacts))
        out = work / "jars"
        cmd = [mvn, "-B", "-q", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
               f"-DoutputDirectory={out}", "-DincludeScope=runtime"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise StackError(f"Maven did not finish fetching the '{label}' jars in {timeout_s:.0f} s; check the network and run `governed-ft stack fetch` again") from None
        if proc.returncode != 0:
            raise StackError(_explain_failure(label, artifacts, proc.stdout + proc.stderr, group_dir(home, groups[0])))
        for group in groups:
            folder = out if len(groups) == 1 else work / group
            if folder is not out:
                folder.mkdir()
                for artifact in JAR_GROUPS[group]:
                    (out / artifact.jar_name).rename(folder / artifact.jar_name)
            (folder / MARKER).write_text("\n".join(a.coordinate for a in JAR_GROUPS[group]) + "\n")
            target = group_dir(home, group)
            if target.exists():
                shutil.rmtree(target)
            folder.rename(target)
    return {group: group_status(home, group) for group in groups}


def _explain_failure(group: str, artifacts: tuple[Artifact, ...], output: str, target: Path) -> str:
    match = _MISSING.search(output)
    missing = match.group(1) if match else None
    if missing is None:
        for a in artifacts:
            if a.coordinate in output:
                missing = a.coordinate
                break
    what = missing or ", ".join(a.coordinate for a in artifacts)
    return (
        f"Maven could not fetch {what} for the '{group}' jars from Maven Central; "
        f"make that artifact reachable (network, proxy or a mirror in ~/.m2/settings.xml) "
        f"or put the jar and its dependencies in a folder '{group}' under GOVERNED_FT_JAR_MIRROR"
    )
