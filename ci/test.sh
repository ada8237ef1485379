#!/usr/bin/env bash
# Everything the tests need, then the whole suite: installs and starts a single-node
# Slurm (ci/slurm/start.sh) and Grid Engine (ci/sge/start.sh), Slurm's Torque-syntax
# wrappers (ci/torque/install.sh) -- all need root --, installs jobqueue with its test
# and docs extras, runs pytest with every batch system required (a missing one fails
# instead of skipping; PBS is the emulator in tests/pbs_emulator; MPI is the PyPI mpich
# wheel with mpi4py, from the test extras), and builds the docs
# with warnings as errors. It also builds the multi-host site (ci/multihost/start.sh: a login
# host and three compute hosts, each its own network namespace with its own slurmd) and runs
# tests/test_multihost.py there in a second pytest, alongside the rest: the site is a Slurm
# cluster of its own, so each pytest checks only its own queues. Extra arguments go to one
# pytest instead (e.g. bash ci/test.sh tests/test_slurm.py -x).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

bash ci/slurm/start.sh
bash ci/torque/install.sh
bash ci/sge/start.sh
"$PY" -m pip install -q --disable-pip-version-check -e '.[test,docs]'

t0=$SECONDS
bash ci/multihost/start.sh
echo "multi-host site started in $((SECONDS - t0)) s"
export JOBQUEUE_TEST_REQUIRE=${JOBQUEUE_TEST_REQUIRE:-slurm,sge,pbs,torque,mpi,multihost}
if [ $# -gt 0 ]; then
  "$PY" -m pytest -v -p no:cacheprovider --durations=15 "$@"
else
  MH_LOG=$(mktemp /tmp/jobqueue-multihost-tests.XXXXXX)
  JOBQUEUE_TEST_QUEUES=multihost "$PY" -m pytest -v -p no:cacheprovider --durations=5 tests/test_multihost.py \
    >"$MH_LOG" 2>&1 &
  mh_pid=$!
  rc=0
  JOBQUEUE_TEST_QUEUES=slurm,sge,emulators "$PY" -m pytest -v -p no:cacheprovider --durations=15 \
    -m "not multihost" tests || rc=$?
  mh_rc=0; wait "$mh_pid" || mh_rc=$?
  echo "=================== tests/test_multihost.py (ran alongside, on the multi-host site) ==================="
  cat "$MH_LOG"; rm -f "$MH_LOG"
  [ "$rc" = 0 ] && [ "$mh_rc" = 0 ] || { echo "tests failed (main pytest: $rc, multi-host pytest: $mh_rc)"; exit 1; }
fi
"$PY" -m sphinx -W --keep-going -q -b html docs docs/_build/html
echo "docs built in docs/_build/html"
