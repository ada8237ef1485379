# Grid Engine configuration shared by ci/sge/start.sh (the single-node cell) and
# ci/multihost/sge.sh (the multi-host site's cell). Sourced; defines functions only.

# global configuration: root may run jobs (min_uid/min_gid 0; the default 1000 rejects root's
# qsub), no login shells (otherwise 'bash -l' runs ~/.profile in every -b y job), no mail,
# accounting flushed every second (qacct sees a job ~1 s after it ends; default 15 s);
# sge_edit_global_conf FILE [EXECD_SPOOL_DIR]
sge_edit_global_conf() {
  sed -i -E -e 's/^(min_uid|min_gid)( +).*/\1\20/' \
    -e 's/^shell_start_mode( +).*/shell_start_mode\1unix_behavior/' \
    -e 's/^login_shells( +).*/login_shells\1none/' \
    -e 's/^administrator_mail( +).*/administrator_mail\1none/' \
    -e 's/^execd_params( +).*/execd_params\1ENABLE_ADDGRP_KILL=TRUE/' \
    -e 's/flush_time=[0-9:]+/flush_time=00:00:01/' "$1"
  [ -z "${2:-}" ] || sed -i -E "s|^execd_spool_dir( +).*|execd_spool_dir\\1$2|" "$1"
}

# scheduler: run every second and right after submits/finishes; no load adjustments
sge_edit_sconf() {
  sed -i -E -e 's/^schedule_interval( +).*/schedule_interval\10:0:1/' \
    -e 's/^flush_submit_sec( +).*/flush_submit_sec\11/' -e 's/^flush_finish_sec( +).*/flush_finish_sec\11/' \
    -e 's/^job_load_adjustments( +).*/job_load_adjustments\1NONE/' \
    -e 's/^load_adjustment_decay_time( +).*/load_adjustment_decay_time\10:0:0/' "$1"
}

# the parallel environment smp (slots on one host): sge_smp_pe FILE
sge_smp_pe() {
  cat > "$1" <<'EOF'
pe_name            smp
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
}

# a batch+interactive queue with PE smp: sge_queue FILE NAME HOSTLIST SLOTS
sge_queue() {
  local qname=$2 hostlist=$3 slots=$4
  cat > "$1" <<EOF
qname                 $qname
hostlist              $hostlist
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 $slots
tmpdir                /tmp
shell                 /bin/bash
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
}
