#!/usr/bin/env bash
# A multi-host Slurm test site on one machine, without Docker: every host is its own Linux
# network + UTS + mount namespace (own hostname, own address, own loopback, own /run/slurm and
# slurmd spool), joined by veth pairs on a bridge that has no route to the outside.
#
#   mh-ctl     10.77.0.2    slurmctld of the site's Slurm cluster "multihost"
#   mh-login   10.77.0.10   the login node: users run Python here; it also has a login-only
#                           network (priv0, 192.168.77.10/24) that no compute host can reach
#   mh-node1   10.77.0.11   compute hosts, each running its own slurmd registered as its own
#   mh-node2   10.77.0.12   Slurm node (4 CPUs, 4000 MB advertised) in partition "compute"
#   mh-node3   10.77.0.13
#   (this machine's root namespace holds the bridge jqmh0, 10.77.0.1)
#
# Grid Engine too (ci/multihost/sge.sh; MULTIHOST_SGE=0 leaves it out): a cell "multihost" of
# its own, sge_qmaster on mh-ctl, an sge_execd on each compute host, mh-login a submit host.
#
# The site's Slurm is a separate cluster from the single-node one of ci/slurm/start.sh (its
# own slurmctld, its own config /etc/jobqueue-multihost/slurm.conf), so the two never see each
# other's jobs. Run a command on a host with ci/multihost/on.sh HOST CMD... (nsenter into the
# host's namespaces, with SLURM_CONF set as a user's login environment would).
#
# Root, idempotent: starts only what is not running (a host whose processes were killed gets
# its slurmd back), then waits until the three nodes are idle. The munge key and packages come
# from ci/slurm/start.sh, which this runs first. ci/multihost/stop.sh takes the site down.
# Knobs: MULTIHOST_NET (default 10.77.0), MULTIHOST_TIMEOUT (default 60 s).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
NET=${MULTIHOST_NET:-10.77.0}
TIMEOUT=${MULTIHOST_TIMEOUT:-60}
ETC=/etc/jobqueue-multihost
CONF=$ETC/slurm.conf
VAR=/var/lib/jobqueue-multihost
RUN=/run/jobqueue-multihost
LOGS=/var/log/jobqueue-multihost
BRIDGE=jqmh0
HOSTS="mh-ctl:2 mh-login:10 mh-node1:11 mh-node2:12 mh-node3:13"
NODES="mh-node1 mh-node2 mh-node3"
T0=${EPOCHREALTIME/./}
log() { local ms=$(( (${EPOCHREALTIME/./} - T0) / 1000 )); printf '[multihost +%d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"; }
die() {
  printf '[multihost] ERROR: %s\n' "$*" >&2
  for f in "$LOGS"/*.log; do [ -s "$f" ] && { echo "--- last lines of $f:" >&2; tail -n 10 "$f" >&2; }; done
  exit 1
}
[ "$(id -u)" = 0 ] || die "must run as root"

# 0. packages and munge (the single-node Slurm's script installs and starts them)
bash "$HERE/../slurm/start.sh" >/dev/null || die "ci/slurm/start.sh failed (packages, munge)"
command -v unshare >/dev/null && command -v nsenter >/dev/null && command -v ip >/dev/null \
  || die "needs unshare, nsenter (util-linux) and ip (iproute2)"
install -d -m 0755 "$ETC" "$VAR" "$RUN" "$LOGS" /run/slurm /var/spool/slurmd

. "$HERE/lib.sh"  # holder HOST: the pid that holds the host's namespaces
on() { local h=$1; shift; nsenter -t "$(holder "$h")" -n -u -m -- "$@"; }

# 1. the network: a bridge in the root namespace, no route from it to anything else
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  log "creating bridge $BRIDGE ($NET.1/24)"
  ip link add "$BRIDGE" type bridge
  ip addr add "$NET.1/24" dev "$BRIDGE"
fi
ip link set "$BRIDGE" up
# bridged frames must not go through iptables (br_netfilter, when loaded, would filter them)
[ -w /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables

# 2. hosts: namespaces held by a sleeping process, a veth into the bridge, hostname, private dirs
for entry in $HOSTS; do
  h=${entry%%:*} addr=$NET.${entry##*:}
  if holder "$h" >/dev/null; then continue; fi
  ip link del "$h" 2>/dev/null || true
  install -d -m 0755 "$VAR/$h/run" "$VAR/$h/spool"
  setsid unshare --net --uts --mount --propagation private sleep infinity </dev/null >/dev/null 2>&1 &
  echo $! > "$RUN/$h.pid"
  for _ in $(seq 100); do holder "$h" >/dev/null && break; sleep 0.02; done
  pid=$(holder "$h") || die "could not create the namespaces of $h"
  ip link add "$h" type veth peer name eth0 netns "$pid"
  ip link set "$h" master "$BRIDGE" up
  on "$h" hostname "$h"
  on "$h" ip link set lo up
  on "$h" ip addr add "$addr/24" dev eth0
  on "$h" ip link set eth0 up
  # this host's own /run/slurm (pid files) and slurmd spool, as on a real machine
  on "$h" mount --bind "$VAR/$h/run" /run/slurm
  on "$h" mount --bind "$VAR/$h/spool" /var/spool/slurmd
  if [ "$h" = mh-login ]; then  # a network only the login node has (e.g. its outward-facing one)
    on "$h" ip link add priv0 type veth peer name priv0-peer  # (no dummy driver here) both ends stay on mh-login
    on "$h" ip link set priv0-peer up
    on "$h" ip addr add 192.168.77.10/24 dev priv0
    on "$h" ip link set priv0 up
  fi
  log "host $h up: pid $pid, $addr"
done

# 3. names: every host resolves every other (as DNS would at a site)
BLOCK=$(for entry in $HOSTS; do echo "$NET.${entry##*:} ${entry%%:*}"; done)
if ! grep -q "^# jobqueue multihost begin" /etc/hosts || \
   [ "$(sed -n '/^# jobqueue multihost begin/,/^# jobqueue multihost end/p' /etc/hosts | sed '1d;$d')" != "$BLOCK" ]; then
  sed -i '/^# jobqueue multihost begin/,/^# jobqueue multihost end/d' /etc/hosts
  printf '# jobqueue multihost begin\n%s\n# jobqueue multihost end\n' "$BLOCK" >> /etc/hosts
  log "wrote the site's names into /etc/hosts"
fi

# 4. the site's Slurm: its own cluster, controller on mh-ctl, one slurmd per compute host
NEW=$(mktemp "$ETC/.slurm.conf.XXXXXX")
cat > "$NEW" <<CONF
# Generated by ci/multihost/start.sh: the multi-host test site's own Slurm cluster.
ClusterName=multihost
SlurmctldHost=mh-ctl($NET.2)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$VAR/mh-ctl/state
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOGS/mh-ctl.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,default_queue_depth=1000,bf_interval=1
SlurmdParameters=config_overrides
ReturnToService=2
MessageTimeout=10
SlurmctldTimeout=30
# a host that stops answering is declared down within seconds, as the host-failure test needs
SlurmdTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
$(for n in $NODES; do for entry in $HOSTS; do [ "${entry%%:*}" = "$n" ] && \
  echo "NodeName=$n NodeAddr=$NET.${entry##*:} NodeHostname=$n CPUs=4 RealMemory=4000 State=UNKNOWN"; done; done)
PartitionName=compute Nodes=mh-node[1-3] Default=YES MaxTime=INFINITE State=UP
CONF
chmod 0644 "$NEW"
CHANGED=0
if cmp -s "$NEW" "$CONF"; then rm -f "$NEW"; else mv -f "$NEW" "$CONF"; CHANGED=1; log "wrote $CONF"; fi
# a login shell's environment there: the site's Slurm, and its Grid Engine cell (ci/multihost/sge.sh)
printf 'SLURM_CONF=%s\nSGE_ROOT=/var/lib/gridengine\nSGE_CELL=multihost\n' "$CONF" > "$ETC/env"
install -d -m 0755 "$VAR/mh-ctl/state"

# daemon HOST NAME: pid of NAME (slurmctld/slurmd) running on HOST, per its pid file there
daemon() {
  local pid
  pid=$(cat "$VAR/$1/run/$2.pid" 2>/dev/null) || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ] || return 1
  echo "$pid"
}
if [ "$CHANGED" = 1 ]; then
  for h in mh-ctl $NODES; do
    for d in slurmctld slurmd; do pid=$(daemon "$h" $d) && { log "config changed: stopping $d on $h"; kill "$pid"; }; done
  done
  sleep 1
fi
export SLURM_CONF=$CONF
if ! daemon mh-ctl slurmctld >/dev/null; then
  log "starting slurmctld on mh-ctl"
  # keep job state over restarts (no -c); state of another cluster name would be fatal: clear it
  [ -s "$VAR/mh-ctl/state/clustername" ] && [ "$(cat "$VAR/mh-ctl/state/clustername")" != multihost ] && rm -rf "${VAR:?}/mh-ctl/state/"*
  on mh-ctl /usr/sbin/slurmctld -f "$CONF" || die "slurmctld failed to start on mh-ctl"
fi
DEADLINE=$((SECONDS + TIMEOUT))
until scontrol ping 2>/dev/null | grep -q UP; do
  [ $SECONDS -lt $DEADLINE ] || die "slurmctld on mh-ctl does not answer scontrol ping"
  sleep 0.2
done
for n in $NODES; do
  if ! daemon "$n" slurmd >/dev/null; then
    log "starting slurmd on $n"
    on "$n" /usr/sbin/slurmd -f "$CONF" -L "$LOGS/$n.log" || die "slurmd failed to start on $n"
  fi
done

# 5. wait until every node is usable (a node that was killed comes back as idle: ReturnToService=2)
for n in $NODES; do
  until [[ "$(sinfo -h -n "$n" -o '%T' 2>/dev/null)" =~ ^(idle|mixed|allocated|completing)$ ]]; do
    st=$(sinfo -h -n "$n" -o '%T' 2>/dev/null || true)
    case "$st" in down*|drain*|fail*) scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true ;; esac
    [ $SECONDS -lt $DEADLINE ] || die "node $n is '$st', not idle, after ${TIMEOUT}s"
    sleep 0.2
  done
done
log "Slurm ready: $(sinfo -h -o '%P %D %T %N' | tr '\n' ' ')"

# 6. Grid Engine: a cell of its own, qmaster on mh-ctl, an execd on each compute host
if [ "${MULTIHOST_SGE:-1}" = 1 ]; then
  bash "$HERE/sge.sh" | grep -E 'READY|starting|initialising' || die "Grid Engine on the site failed (ci/multihost/sge.sh)"
fi
log "READY - run commands with: ci/multihost/on.sh mh-login CMD..."
