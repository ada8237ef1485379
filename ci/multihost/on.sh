#!/usr/bin/env bash
# on.sh HOST CMD [ARG...]: run CMD on a host of the multi-host site (ci/multihost/start.sh):
# inside HOST's network, UTS and mount namespaces (its hostname, addresses, loopback), with the
# site's Slurm configuration (SLURM_CONF) as a user's login environment there would have.
# The working directory and the rest of the environment are kept (the file system is shared,
# as home and scratch are at a site). Root only (nsenter).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 HOST CMD [ARG...]  (hosts: mh-login mh-ctl mh-node1 mh-node2 mh-node3)" >&2; exit 2; }
host=$1; shift
. "$(dirname "$0")/lib.sh"
pid=$(holder "$host") || { echo "$0: host $host is not up (run ci/multihost/start.sh)" >&2; exit 2; }
set -a; . /etc/jobqueue-multihost/env; set +a
exec nsenter -t "$pid" -n -u -m --wd="$PWD" -- "$@"
