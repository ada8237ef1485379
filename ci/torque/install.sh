#!/usr/bin/env bash
# Install Slurm's Torque-syntax wrappers (slurm-wlm-torque: /usr/bin/qsub, qstat, qdel),
# which submit to the Slurm started by ci/slurm/start.sh. They give the test suite a real,
# independent Torque-flavoured qsub next to the OpenPBS emulator. Grid Engine's commands
# live in /opt/sge/bin (ci/sge/start.sh), so the two never collide over /usr/bin/qsub.
set -euo pipefail
if [ -x /usr/bin/qsub ] && grep -qi slurm /usr/bin/qsub; then
  echo "[torque] slurm-wlm-torque already installed"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "[torque] ERROR: must be run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
if ! apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends slurm-wlm-torque >/tmp/torque-apt.log 2>&1; then
  apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null 2>&1 || true
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends slurm-wlm-torque >/tmp/torque-apt.log 2>&1 \
    || { tail -20 /tmp/torque-apt.log >&2; echo "[torque] ERROR: apt-get install slurm-wlm-torque failed" >&2; exit 1; }
fi
echo "[torque] installed $(dpkg-query -W -f '${Package} ${Version}' slurm-wlm-torque)"
