#!/usr/bin/env bash
# Everything the tests need, then the whole suite: installs and starts a single-node
# Slurm (ci/slurm/start.sh) and Grid Engine (ci/sge/start.sh), Slurm's Torque-syntax
# wrappers (ci/torque/install.sh) -- all need root --, installs jobqueue with its test
# and docs extras, runs pytest with every batch system required (a missing one fails
# instead of skipping; PBS is the emulator in tests/pbs_emulator; MPI is the PyPI mpich
# wheel with mpi4py, from the test extras), and builds the docs
# with warnings as errors. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

bash ci/slurm/start.sh
bash ci/torque/install.sh
bash ci/sge/start.sh
"$PY" -m pip install -q --disable-pip-version-check -e '.[test,docs]'

export JOBQUEUE_TEST_REQUIRE=${JOBQUEUE_TEST_REQUIRE:-slurm,sge,pbs,torque,mpi}
"$PY" -m pytest -v -p no:cacheprovider --durations=15 tests "$@"
"$PY" -m sphinx -W --keep-going -q -b html docs docs/_build/html
echo "docs built in docs/_build/html"
