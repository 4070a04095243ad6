#!/usr/bin/env bash
# local_cluster.sh - a one-node SLURM on this machine, to test the job templates for real
# (Debian's slurmctld, slurmd, slurm-client and munge). Run as root: start | stop | status.
#
# It advertises fake A100s (gpu:a100:N, backed by dummy device files) so that the templates'
# GPU requests are accepted on a CPU-only machine; training still runs on the CPU because the
# scripts ask torch whether a GPU really answers. Settings that the tests rely on:
#   DependencyParameters=kill_invalid_depend  a failed parent cancels its children (no forever-pending)
#   EnforcePartLimits=ALL                     impossible requests are refused at submission
#   JobCompType=jobcomp/filetxt               finished jobs' states readable with `sacct -c`
# Knobs: FAKE_GPUS (4), NODE_CPUS (32), NODE_MEM_MB (256000), WAIT_S (60).
set -euo pipefail

FAKE_GPUS=${FAKE_GPUS:-4}
NODE_CPUS=${NODE_CPUS:-32}
NODE_MEM_MB=${NODE_MEM_MB:-256000}
WAIT_S=${WAIT_S:-60}
HOST=$(hostname -s)
LOGS=/var/log/slurm
STATE=/var/lib/slurm/slurmctld
SPOOL=/var/lib/slurm/slurmd
FAKEDEV=/var/lib/slurm/fakedev

say() { echo "[local_cluster] $*" >&2; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {
  local pidfile=$1
  if alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
    command -v munged >/dev/null && return
  say "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
  say "munged did not start"; exit 1
}

write_config() {
  local gres_line="" gres_types=""
  if [ "$FAKE_GPUS" -gt 0 ]; then
    gres_line=" Gres=gpu:a100:${FAKE_GPUS}"; gres_types="GresTypes=gpu"
    mkdir -p "$FAKEDEV"
    for i in $(seq 0 $((FAKE_GPUS - 1))); do
      # GRES files must be character devices; /dev/null's numbers do
      [ -e "$FAKEDEV/gpu$i" ] || mknod "$FAKEDEV/gpu$i" c 1 3 2>/dev/null || touch "$FAKEDEV/gpu$i"
    done
    echo "NodeName=${HOST} Name=gpu Type=a100 File=${FAKEDEV}/gpu[0-$((FAKE_GPUS - 1))]" > "$2"
  else
    : > "$2"
  fi
  cat > "$1" <<CONF
ClusterName=local
SlurmctldHost=${HOST}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=${STATE}
SlurmdSpoolDir=${SPOOL}
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOGS}/slurmctld.log
SlurmdLogFile=${LOGS}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
DependencyParameters=kill_invalid_depend
EnforcePartLimits=ALL
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${LOGS}/jobcomp.log
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
${gres_types}
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${NODE_CPUS} RealMemory=${NODE_MEM_MB}${gres_line} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=${HOST} MaxTime=INFINITE State=UP
CONF
}

wait_until_idle() {
  local state=""
  for i in $(seq $((WAIT_S * 2))); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
      idle|mixed|allocated) alive /run/slurmd.pid && alive /run/slurmctld.pid && { say "node $HOST is $state"; return; } ;;
      drain*|down*|inval*|fail*) [ $((i % 2)) -eq 0 ] && scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  say "node still '$state' after ${WAIT_S}s"; tail -n 20 "$LOGS"/slurmctld.log "$LOGS"/slurmd.log >&2 || true
  exit 1
}

start() {
  [ "$(id -u)" -eq 0 ] || { say "run as root"; exit 1; }
  install_packages
  start_munge
  mkdir -p "$STATE" "$SPOOL" "$LOGS"; chown slurm:slurm "$STATE" "$LOGS"
  local conf gres; conf=$(mktemp); gres=$(mktemp)
  write_config "$conf" "$gres"
  if ! cmp -s "$conf" /etc/slurm/slurm.conf || ! cmp -s "$gres" /etc/slurm/gres.conf; then
    stop_daemon /run/slurmd.pid; stop_daemon /run/slurmctld.pid
    install -m 0644 "$conf" /etc/slurm/slurm.conf; install -m 0644 "$gres" /etc/slurm/gres.conf
  fi
  # state saved under another cluster name (an earlier configuration) stops slurmctld
  if [ -f "$STATE/clustername" ] && [ "$(cat "$STATE/clustername")" != local ]; then
    rm -rf "${STATE:?}"/* "${SPOOL:?}"/*
  fi
  rm -f "$conf" "$gres"
  alive /run/slurmctld.pid || /usr/sbin/slurmctld || { tail -n 5 "$LOGS"/slurmctld.log >&2; exit 1; }
  alive /run/slurmd.pid || /usr/sbin/slurmd || { tail -n 5 "$LOGS"/slurmd.log >&2; exit 1; }
  wait_until_idle
}

case "${1:-start}" in
  start) start ;;
  stop) stop_daemon /run/slurmd.pid; stop_daemon /run/slurmctld.pid; stop_daemon /run/munge/munged.pid ;;
  status) scontrol ping && sinfo -N -o "%N %T %c %m %G" ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
