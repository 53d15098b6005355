#!/usr/bin/env bash
# Bring up a real single-node Slurm (Debian 12's Slurm 22.05 + MUNGE) on this machine without
# systemd, for the integration tests that submit job arrays. Idempotent: a second run with the
# daemons already up and the same configuration only checks that the node is idle.
#
#   SLURM_TEST_DIR   state, spool, logs and pid files (default /tmp/advrob-slurm)
#   SLURM_UP_TIMEOUT seconds to wait for the node to be idle (default 60)
#   SLURM_UP_PROBE   1 (default): after starting a daemon, run one trivial job to the end; 0: don't
#   SLURM_TEST_CPUS  CPUs the node offers to jobs (default: the machine's; more than the machine
#                    has lets that many 1-CPU array tasks run at once, via config_overrides)
#
# Must run as root (it installs packages, writes /etc/slurm/slurm.conf and runs the daemons as
# root). Stop everything with .ci/slurm-down.sh.
set -euo pipefail

dir="${SLURM_TEST_DIR:-/tmp/advrob-slurm}"
timeout="${SLURM_UP_TIMEOUT:-60}"
conf=/etc/slurm/slurm.conf
start_ns=$(date +%s%N)

[ "$(id -u)" = 0 ] || { echo "slurm-up: must run as root" >&2; exit 1; }

# --- packages --------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "slurm-up: installing ${need[*]}"
  apt-get update -qq
  # without recommends: those pull in ~20 plugin -dev packages the daemons don't need
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="/usr/sbin:/sbin:$PATH"

mkdir -p "$dir"/{ctld,spool,log,run}
logs() {
  for f in "$dir"/log/slurmctld.log "$dir"/log/slurmd.log /var/log/munge/munged.log; do
    [ -f "$f" ] && { echo "----- $f (last 40 lines)"; tail -n 40 "$f"; }
  done
}
die() { echo "slurm-up: ERROR: $*" >&2; logs >&2; exit 1; }

# --- munge -----------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0700 /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  # the munge package's postinst normally creates it; a 1024-bit random key otherwise
  if command -v mungekey >/dev/null 2>&1; then
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  # a stale socket or pid file from a killed munged makes a new one refuse to start
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged || die "munged did not start"
  touch /run/munge/.started-by-advrob # slurm-down.sh stops munged only if this script started it
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n </dev/null | unmunge >/dev/null || die "munge credentials do not round-trip"
fi

# --- slurm.conf ------------------------------------------------------------------------------
host=$(hostname -s)
# the node line as slurmd sees this machine (CPUs, sockets, cores, RealMemory), minus "UpTime=";
# RealMemory a little below what slurmd measures so that a few MB of drift never drains the node
node=$(slurmd -C | head -n 1)
case "$node" in NodeName=*) ;; *) die "slurmd -C printed no node line: $node" ;; esac
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
node=$(sed "s/^NodeName=[^ ]*/NodeName=$host/; s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/" <<<"$node")
slurmd_params=""
if [ -n "${SLURM_TEST_CPUS:-}" ]; then
  cpus=$SLURM_TEST_CPUS
  [[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "SLURM_TEST_CPUS must be a positive integer, not '$cpus'"
  node="NodeName=$host CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$((mem * 95 / 100))"
  # trust slurm.conf over what slurmd detects, so that the node is not set INVALID for having fewer
  slurmd_params="SlurmdParameters=config_overrides"
fi

new=$(mktemp)
cgroup_new=$(mktemp)
trap 'rm -f "$new" "$cgroup_new"' EXIT
cat >"$new" <<EOF
# written by advrob/.ci/slurm-up.sh: a single-node test cluster, state under $dir
ClusterName=advrob
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no cgroups: this must run in containers and VMs without systemd or a writable cgroup tree
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# one line per finished job (JobId=... JobState=COMPLETED|FAILED|CANCELLED|TIMEOUT ExitCode=...)
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
SwitchType=switch/none
MailProg=/bin/true
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# several 1-CPU array tasks side by side
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
# no 3 s batch delay, a full pass every second; tasks still start on slurmctld's 1 s tick. No
# sched_min_interval=0: sched/builtin takes "interval=" from anywhere in this line and logs
# "Invalid SchedulerParameters interval: 0" every 30 s
SchedulerParameters=batch_sched_delay=0,sched_interval=1
# a job whose dependency failed is cancelled (JobState=CANCELLED, Reason=DependencyNeverSatisfied)
# instead of pending forever
DependencyParameters=kill_invalid_depend
# finished jobs stay visible to "scontrol show job" (and squeue -t all) for an hour
MinJobAge=3600
MaxJobCount=100000
MaxArraySize=100001
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
Waittime=0
$slurmd_params
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cat >"$cgroup_new" <<EOF
# written by advrob/.ci/slurm-up.sh: nothing is confined (see ProctrackType/TaskPlugin)
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF

# --- daemons ---------------------------------------------------------------------------------
alive() { # pid, process name: alive, not a zombie, and the right program
  local stat
  [ -n "$1" ] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # the fields after "(comm)": state first; an exited daemon stays a zombie until init reaps it
  [ "$(cut -d' ' -f1 <<<"${stat##*) }")" != Z ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}
running() { # pid file, process name
  alive "$(cat "$1" 2>/dev/null)" "$2"
}
stop() { # pid file, process name: SIGTERM, up to 10 s, SIGKILL
  local pid
  pid=$(cat "$1" 2>/dev/null) || true
  if alive "$pid" "$2"; then
    # the pid, not the pid file: slurmctld deletes that seconds before it exits and frees its port
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" "$2" || break; sleep 0.1; done
    if alive "$pid" "$2"; then kill -9 "$pid" 2>/dev/null || true; sleep 0.2; fi
  fi
  rm -f "$1"
}

mkdir -p /etc/slurm
if ! cmp -s "$new" "$conf" || ! cmp -s "$cgroup_new" /etc/slurm/cgroup.conf; then
  # running daemons keep the configuration they started with: stop those of the old configuration
  # (its pid files, wherever its SLURM_TEST_DIR was) so that they restart on the new one
  if [ -f "$conf" ]; then
    old_ctld=$(sed -n 's/^SlurmctldPidFile=//p' "$conf")
    old_slurmd=$(sed -n 's/^SlurmdPidFile=//p' "$conf")
    [ -n "$old_slurmd" ] && stop "$old_slurmd" slurmd
    [ -n "$old_ctld" ] && stop "$old_ctld" slurmctld
  fi
  install -m 0644 "$new" "$conf"
  install -m 0644 "$cgroup_new" /etc/slurm/cgroup.conf
fi

started=0
probe=""
if ! running "$dir/run/slurmctld.pid" slurmctld; then
  # -c: a cold start, without the jobs and node states of an earlier run
  slurmctld -c || die "slurmctld did not start"
  started=1
fi
if ! running "$dir/run/slurmd.pid" slurmd; then
  slurmd -N "$host" || die "slurmd did not start"
  started=1
fi

# --- wait for the node -----------------------------------------------------------------------
deadline=$(($(date +%s) + timeout))
state=""
while :; do
  state=$(sinfo -h -N -n "$host" -o '%T' 2>/dev/null | head -n 1 || true)
  case "$state" in
    idle | mixed | allocated) break ;;
    down* | drain* | fail*)
      # e.g. "down" after an unclean stop: ReturnToService=2 brings it back once slurmd registers,
      # but a node set down by hand stays down
      scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  # both fork into the background before they bind their ports: one that could not (a port in
  # use, a bad slurm.conf) has exited by now
  if [ "$(($(date +%s) - deadline + timeout))" -ge 2 ]; then
    running "$dir/run/slurmctld.pid" slurmctld || die "slurmctld exited (see its log below)"
    running "$dir/run/slurmd.pid" slurmd || die "slurmd exited (see its log below)"
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    sinfo -N -l >&2 || true
    scontrol show node "$host" >&2 || true
    die "node $host not idle after ${timeout}s (state: '${state:-no answer from slurmctld}')"
  fi
  sleep 0.2
done

# --- a probe job -----------------------------------------------------------------------------
# after a (re)start the first job waits 2-3 s before it is scheduled; running one here means that
# the tests start on a cluster that has run a job end to end (munge credentials, slurmstepd, spool)
if [ "$started" = 1 ] && [ "${SLURM_UP_PROBE:-1}" = 1 ]; then
  probe=$(sbatch --parsable -J advrob-probe -o /dev/null -e /dev/null --chdir=/ --wrap true) ||
    die "sbatch of the probe job failed"
  probe=${probe%%;*}
  while [ -n "$(squeue -h -j "$probe" 2>/dev/null)" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      squeue >&2 || true
      die "probe job $probe not finished ${timeout}s after the start"
    fi
    sleep 0.1
  done
  pstate=$(scontrol -o show job "$probe" | grep -o 'JobState=[A-Z_]*' || true)
  [ "$pstate" = JobState=COMPLETED ] || die "probe job $probe ended with ${pstate:-no state}"
fi
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
echo "slurm-up: node $host $state ($(sinfo -h -N -n "$host" -o '%c CPUs, %m MB'))${probe:+, probe job $probe completed}, state in $dir; took $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))s"
