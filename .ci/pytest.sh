#!/usr/bin/env bash
# Run the test suite; "no tests collected" (pytest exit 5) is a failure, not a pass.
# Where ../shared/jars holds the catalog server's jars (Maven here does not serve them), the suite uses them,
# and a skipped test fails the run: the catalog-server tests must run, not skip.
# With no arguments (the whole suite, as CI runs it) fewer passed tests than .ci/test-count fail the run too; that
# number changes only in a commit that removes tests on purpose and says why.
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
floor=()
if [ "$#" -eq 0 ]; then
  floor=(--min-passed "$(cat .ci/test-count)")
fi
# Two workers, one per core; a file stays on one worker, so its module fixtures run once. Files start in the order
# tests/conftest.py sorts them (longest first): xdist would otherwise reorder them by their number of tests.
workers="${GOVERNED_FT_TEST_WORKERS:-2}"
# One core per worker: torch (and the BLAS under it) and the tokenizers in every process a worker starts use one
# thread, instead of each taking every core and the two workers' processes contending for them.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
started=$(date +%s)
.venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder --slowest 15 "${floor[@]}" "$@"
rc=$?
echo "pytest wall time: $(( $(date +%s) - started )) s"
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
