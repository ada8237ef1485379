#!/usr/bin/env bash
# kill-host.sh HOST: the host dies -- SIGKILL every process running in HOST's namespaces
# (its slurmd, the job steps and dask workers on it), as a crashed node would. Its address
# stays on the network, so peers see closed connections at once; the controller finds the
# slurmd gone within SlurmdTimeout. ci/multihost/start.sh brings the host back.
set -uo pipefail
[ $# = 1 ] || { echo "usage: $0 HOST" >&2; exit 2; }
pid=$(cat "/run/jobqueue-multihost/$1.pid" 2>/dev/null) || { echo "$0: no host $1" >&2; exit 2; }
uts=$(readlink "/proc/$pid/ns/uts") || { echo "$0: host $1 is not running" >&2; exit 2; }
[ "$uts" != "$(readlink /proc/self/ns/uts)" ] || { echo "$0: $1 shares this machine's namespace" >&2; exit 2; }
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
