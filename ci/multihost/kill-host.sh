#!/usr/bin/env bash
# kill-host.sh HOST: the host dies -- SIGKILL every process running in HOST's namespaces
# (its slurmd, the job steps and dask workers on it), as a crashed node would. Its address
# stays on the network, so peers see closed connections at once; the controller finds the
# slurmd gone within SlurmdTimeout. ci/multihost/start.sh brings the host back.
set -uo pipefail
[ $# = 1 ] || { echo "usage: $0 HOST" >&2; exit 2; }
. "$(dirname "$0")/lib.sh"
pid=$(holder "$1") || { echo "$0: host $1 is not up" >&2; exit 2; }
uts=$(readlink "/proc/$pid/ns/uts")
for round in 1 2 3; do  # again: a process may fork while the first round kills
  victims=()
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$pid" ] && continue
    [ "$(readlink "/proc/$p/ns/uts" 2>/dev/null)" = "$uts" ] && victims+=("$p")
  done
  [ ${#victims[@]} = 0 ] && break
  kill -KILL "${victims[@]}" 2>/dev/null
  echo "[multihost] $1: killed ${#victims[@]} processes (round $round)"
  sleep 0.2
done
