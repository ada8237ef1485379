#!/usr/bin/env bash
# Take the multi-host site of ci/multihost/start.sh down: cancel its jobs, kill every process
# of its hosts (slurmctld, slurmd, jobs, the namespace holders), remove the veth pairs, the
# bridge and the site's names in /etc/hosts. --purge also deletes its state, logs and config
# (the Slurm cluster's and the Grid Engine cell's).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
RUN=/run/jobqueue-multihost
. "$HERE/lib.sh"
if [ -s /etc/jobqueue-multihost/env ]; then
  set -a; . /etc/jobqueue-multihost/env; set +a
  timeout 15 scancel --full --quiet -u "$(id -un)" 2>/dev/null || true
fi
for f in "$RUN"/*.pid; do
  [ -e "$f" ] || continue
  h=$(basename "$f" .pid)
  bash "$HERE/kill-host.sh" "$h" 2>/dev/null
  pid=$(holder "$h") && kill -KILL "$pid"
  ip link del "$h" 2>/dev/null
  rm -f "$f"
  echo "[multihost-stop] $h down"
done
ip link del jqmh0 2>/dev/null && echo "[multihost-stop] bridge jqmh0 removed"
sed -i '/^# jobqueue multihost begin/,/^# jobqueue multihost end/d' /etc/hosts
if [ "${1:-}" = --purge ]; then
  rm -rf /var/lib/jobqueue-multihost /var/log/jobqueue-multihost /etc/jobqueue-multihost /var/lib/gridengine/multihost
  echo "[multihost-stop] state, logs and config removed"
fi
