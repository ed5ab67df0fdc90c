#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, 127.0.0.1 only, for the tests (make test-cluster).
#   scripts/slurm_cluster.sh start   |   scripts/slurm_cluster.sh stop
# Needs Debian's slurm-wlm and munge (installed by .ci/run) and root.
set -euo pipefail
STATE=${SLURM_TEST_STATE:-/tmp/infoflow-slurm}
CONF=/etc/slurm/slurm.conf
case "${1:-}" in
start)
  mkdir -p "$STATE"/{spool,ctld,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge
  [ -s /etc/munge/munge.key ] || (dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null)
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged --force" || /usr/sbin/munged --force
  CPUS=$(nproc); MEM=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > "$CONF" <<CONF
ClusterName=infoflow-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=1
InactiveLimit=0
MpiDefault=none
SlurmctldPort=6817
SlurmdPort=6818
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  rm -f /etc/slurm/cgroup.conf   # proctrack/linuxproc + task/none: no cgroups needed
  slurmctld -c 2>/dev/null || slurmctld
  slurmd -c 2>/dev/null || slurmd
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then echo "slurm: up"; exit 0; fi
    scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "slurm: did not come up; logs in $STATE/log" >&2; tail -20 "$STATE"/log/*.log >&2; exit 1 ;;
stop)
  pkill -x slurmd || true; pkill -x slurmctld || true
  echo "slurm: stopped" ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
