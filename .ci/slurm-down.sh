#!/usr/bin/env bash
# Stop the single-node Slurm that .ci/slurm-up.sh started: cancel what is still queued or running,
# stop slurmctld and slurmd, then munged if slurm-up.sh started it. Bounded in time (normally 1-2 s,
# about a minute if every daemon hangs); safe to run when nothing is up. State and logs stay in
# $SLURM_TEST_DIR for a post-mortem.
#
#   SLURM_TEST_DIR   as for slurm-up.sh (default /tmp/advrob-slurm); only a fallback: the pid files
#                    are those named in /etc/slurm/slurm.conf, i.e. of the running configuration
set -uo pipefail

dir="${SLURM_TEST_DIR:-/tmp/advrob-slurm}"
start_ns=$(date +%s%N)
export PATH="/usr/sbin:/sbin:$PATH"

alive() { # pid, process name: alive, not a zombie, and the right program
  local stat
  [ -n "$1" ] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # the fields after "(comm)": state first; an exited daemon stays a zombie until init reaps it
  [ "$(cut -d' ' -f1 <<<"${stat##*) }")" != Z ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}
# wait up to $3 tenths of a second for process $1 ($2) to exit
wait_exit() {
  local i
  for ((i = 0; i < $3; i++)); do alive "$1" "$2" || return 0; sleep 0.1; done
  return 1
}
stop() { # pid, process name: SIGTERM, 10 s, SIGKILL
  if alive "$1" "$2"; then
    kill "$1" 2>/dev/null
    if ! wait_exit "$1" "$2" 100; then
      echo "slurm-down: $2 ignored SIGTERM for 10 s, killing it" >&2
      kill -9 "$1" 2>/dev/null
      wait_exit "$1" "$2" 20
    fi
  fi
}

# the pid files of the running configuration, wherever slurm-up.sh's SLURM_TEST_DIR was then.
# The pids are read now: slurmctld deletes its pid file seconds before it has exited (and freed
# its port)
conf=/etc/slurm/slurm.conf
ctld_file=$(sed -n 's/^SlurmctldPidFile=//p' "$conf" 2>/dev/null)
slurmd_file=$(sed -n 's/^SlurmdPidFile=//p' "$conf" 2>/dev/null)
ctld_file=${ctld_file:-$dir/run/slurmctld.pid}
slurmd_file=${slurmd_file:-$dir/run/slurmd.pid}
ctld=$(cat "$ctld_file" 2>/dev/null)
slurmd=$(cat "$slurmd_file" 2>/dev/null)
if alive "$ctld" slurmctld; then
  # jobs left by a failed test: cancel them so that no job step outlives slurmd (slurmstepd
  # processes survive a slurmd shutdown by design)
  jobs=$(timeout 5 squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    timeout 5 scancel $jobs 2>/dev/null
    deadline=$(($(date +%s) + 5))
    while [ -n "$(timeout 2 squeue -h -t R,CG,S 2>/dev/null)" ] && [ "$(date +%s)" -lt "$deadline" ]; do
      sleep 0.1
    done
  fi
  # stops slurmctld and every slurmd registered with it
  if timeout 5 scontrol shutdown >/dev/null 2>&1; then
    wait_exit "$slurmd" slurmd 50
    wait_exit "$ctld" slurmctld 100
  fi
fi
stop "$slurmd" slurmd
stop "$ctld" slurmctld
rm -f "$ctld_file" "$slurmd_file"

if [ -e /run/munge/.started-by-advrob ]; then
  munged=$(cat /run/munge/munged.pid 2>/dev/null)
  if alive "$munged" munged; then
    timeout 10 /usr/sbin/munged --stop >/dev/null 2>&1 || true
    stop "$munged" munged
  fi
  rm -f /run/munge/.started-by-advrob
fi

elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
echo "slurm-down: stopped; took $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))s"
