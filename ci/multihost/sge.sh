#!/usr/bin/env bash
# Grid Engine on the multi-host site (run by ci/multihost/start.sh once the hosts are up): a
# cell of its own, "multihost", beside the single-node suite's "default" cell -- sge_qmaster on
# mh-ctl, an sge_execd on each compute host (queue all.q, 4 slots per host, PE smp), mh-login
# a submit host. Clients select it with SGE_CELL=multihost (ci/multihost/on.sh sets it) and
# the Grid Engine commands of ci/sge/start.sh (/opt/sge/bin). Root, idempotent.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export PATH=/opt/sge/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SGE_ROOT=/var/lib/gridengine SGE_CELL=multihost
VAR=/var/lib/jobqueue-multihost/sge
COMMON=$SGE_ROOT/$SGE_CELL/common
NODES="mh-node1 mh-node2 mh-node3"
TIMEOUT=${MULTIHOST_TIMEOUT:-60}
DAEMON_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
            SGE_ROOT=$SGE_ROOT SGE_CELL=$SGE_CELL LANG=C.UTF-8)
log() { echo "[multihost-sge +${SECONDS}s] $*"; }
die() { echo "[multihost-sge] ERROR: $*" >&2; tail -n 8 "$VAR"/qmaster/messages "$VAR"/execd/*/messages 2>/dev/null >&2; exit 1; }
on() { bash "$HERE/on.sh" "$@"; }
. "$HERE/../sge/conf.sh"  # the configuration shared with the single-node cell
pid_alive() { local pid; pid=$(cat "$1" 2>/dev/null) && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; }

if [ ! -x /usr/sbin/sge_qmaster ] || [ ! -x /opt/sge/bin/qsub ]; then
  log "Grid Engine is not installed: installing it with ci/sge/start.sh"
  SGE_PROBE=0 bash "$HERE/../sge/start.sh" >/dev/null || die "ci/sge/start.sh failed"
fi

# 1. the cell: its own spool and configuration, its master on mh-ctl
install -d -o sgeadmin -g sgeadmin "$SGE_ROOT/$SGE_CELL" "$COMMON" "$VAR" "$VAR/qmaster" "$VAR/qmaster/job_scripts" \
  "$VAR/spooldb" "$VAR/execd"
sed -e "s|/var/spool/gridengine/spooldb|$VAR/spooldb|" -e "s|/var/spool/gridengine/qmaster|$VAR/qmaster|" \
  /usr/share/gridengine/default-bootstrap > "$VAR/bootstrap.new"
cmp -s "$VAR/bootstrap.new" "$COMMON/bootstrap" || install -m 0644 -o sgeadmin -g sgeadmin "$VAR/bootstrap.new" "$COMMON/bootstrap"
rm -f "$VAR/bootstrap.new"
echo mh-ctl > "$COMMON/act_qmaster"; chown sgeadmin:sgeadmin "$COMMON/act_qmaster"
if [ ! -e "$VAR/spooldb/sge" ]; then
  log "initialising the cell's spool"
  runuser -u sgeadmin -- /usr/share/gridengine/scripts/init_cluster "$SGE_ROOT" "$SGE_CELL" "$VAR/spooldb" sgeadmin \
    >/dev/null || die "init_cluster failed"
  conf=$(mktemp); cp /usr/share/gridengine/default-configuration "$conf"; chmod 0644 "$conf"
  sge_edit_global_conf "$conf" "$VAR/execd"
  runuser -u sgeadmin -- "${DAEMON_ENV[@]}" /usr/lib/gridengine/spooldefaults configuration "$conf" \
    || die "spooldefaults configuration failed"
  rm -f "$conf"
fi

# 2. sge_qmaster on mh-ctl
if ! pid_alive "$VAR/qmaster/qmaster.pid" sge_qmaster; then
  log "starting sge_qmaster on mh-ctl"
  (cd / && on mh-ctl "${DAEMON_ENV[@]}" /usr/sbin/sge_qmaster 9>&-) || die "sge_qmaster failed to start"
fi
for _ in $(seq $((TIMEOUT * 5))); do on mh-ctl qconf -sh >/dev/null 2>&1 && break; sleep 0.2; done
on mh-ctl qconf -sh >/dev/null 2>&1 || die "sge_qmaster on mh-ctl does not answer"

# 3. hosts, queue, scheduler (qconf on the master's host, an admin host from the start)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT; chmod 0755 "$TMP"
q() { on mh-ctl "$@" >"$TMP/q.out" 2>&1 || { cat "$TMP/q.out" >&2; die "failed: $*"; }; }
for h in mh-login $NODES; do on mh-ctl qconf -sh 2>/dev/null | grep -qx "$h" || q qconf -ah "$h"; done
on mh-ctl qconf -ss 2>/dev/null | grep -qx mh-login || q qconf -as mh-login
on mh-ctl qconf -ssconf > "$TMP/sconf"
sge_edit_sconf "$TMP/sconf"
q qconf -Msconf "$TMP/sconf"
on mh-ctl qconf -sc > "$TMP/complex"
sed -i -E 's/^(mem_free +mf +MEMORY +<= +YES +)NO /\1YES/' "$TMP/complex"
q qconf -Mc "$TMP/complex"
sge_smp_pe "$TMP/smp"
if on mh-ctl qconf -spl 2>/dev/null | grep -qx smp; then q qconf -Mp "$TMP/smp"; else q qconf -Ap "$TMP/smp"; fi
for h in $NODES; do
  printf 'hostname %s\nload_scaling NONE\ncomplex_values mem_free=4000M\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n' "$h" > "$TMP/$h"
  if on mh-ctl qconf -sel 2>/dev/null | grep -qx "$h"; then q qconf -Me "$TMP/$h"; else q qconf -Ae "$TMP/$h"; fi
done
printf 'group_name @allhosts\nhostlist %s\n' "$NODES" > "$TMP/allhosts"
if on mh-ctl qconf -shgrpl 2>/dev/null | grep -qx @allhosts; then q qconf -Mhgrp "$TMP/allhosts"; else q qconf -Ahgrp "$TMP/allhosts"; fi
sge_queue "$TMP/all.q" all.q @allhosts 4  # 4 slots per host, PE smp
if on mh-ctl qconf -sql 2>/dev/null | grep -qx all.q; then q qconf -Mq "$TMP/all.q"; else q qconf -Aq "$TMP/all.q"; fi

# 4. an sge_execd on every compute host
for h in $NODES; do
  pid_alive "$VAR/execd/$h/execd.pid" sge_execd && continue
  log "starting sge_execd on $h"
  (cd / && on "$h" "${DAEMON_ENV[@]}" /usr/sbin/sge_execd 9>&-) || die "sge_execd failed to start on $h"
done
for h in $NODES; do
  for _ in $(seq $((TIMEOUT * 5))); do
    on mh-ctl qstat -f -q "all.q@$h" 2>/dev/null | grep -Eq "^all.q@$h +BIP +0/[0-9]+/4 +[0-9.-]+ +[a-z0-9-]+ *$" && break
    sleep 0.2
  done
  on mh-ctl qstat -f -q "all.q@$h" 2>/dev/null | grep -Eq "^all.q@$h +BIP +0/[0-9]+/4 +[0-9.-]+ +[a-z0-9-]+ *$" \
    || { on mh-ctl qmod -c "all.q@$h" >/dev/null 2>&1; on mh-ctl qstat -f >&2; die "queue instance all.q@$h is not usable"; }
done
log "READY: cell $SGE_CELL, qmaster on mh-ctl, execds on $NODES"
