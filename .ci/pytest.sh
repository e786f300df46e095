#!/usr/bin/env bash
# Run the test suite; "no tests collected" (pytest exit 5) is a failure, not a pass.
# Where ../shared/jars holds the catalog server's jars (Maven here does not serve them), the suite uses them,
# and a skipped test fails the run: the catalog-server tests must run, not skip.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${GOVERNED_FT_JAR_MIRROR:-}" ] && [ -d ../shared/jars/uc-server ]; then
  GOVERNED_FT_JAR_MIRROR="$(cd ../shared/jars && pwd)"
  export GOVERNED_FT_JAR_MIRROR
fi
if [ -n "${GOVERNED_FT_JAR_MIRROR:-}" ]; then
  export GOVERNED_FT_FAIL_ON_SKIP=1
  echo "jar mirror: $GOVERNED_FT_JAR_MIRROR (read only; a skipped test fails the run)"
fi
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
