# Sourced by the multi-host site's scripts: where a host's namespaces are.
#
# holder HOST: print the pid of the sleeping process that holds HOST's network, UTS and mount
# namespaces (written by start.sh to /run/jobqueue-multihost/HOST.pid); fail if it is not running
# (a pid reused by another process, or one in this machine's own namespaces, does not count).
holder() {
  local pid
  pid=$(cat "/run/jobqueue-multihost/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sleep ] \
    && [ "$(readlink "/proc/$pid/ns/uts")" != "$(readlink /proc/self/ns/uts)" ] || return 1
  echo "$pid"
}
