#!/bin/bash
# Issue 14's launch comparison on the GPU host, which has no Open MPI: Debian's Open MPI, mpi4py and the
# Python 3.11 that mpi4py is built for travel there as files (dpkg -x, relocated with OPAL_PREFIX), then
# `tprun bench launch` runs against that mpirun in the same call.
#   here:                                   bash scripts/gpu/mpi-launch.sh pack     (makes .device/mpi.tgz, ~9 MB)
#   there, carry [".device/mpi.tgz"]:       bash scripts/gpu/mpi-launch.sh stash
#   then (after adapters.sh's stash calls), carry [".device/adp4", "dist"]:
#                                           export OUT; bash scripts/gpu/adapters.sh exec bash scripts/gpu/mpi-launch.sh run
# `quiet2` instead of `run`: bench launch -n 4 and -n 2 and bench comm pinned to two idle cores (taskset -c 0,1);
# BASE_TGZ=.device/base-dist.tgz alternates another build's dist with this one.
# (the tracked tree, adp4, dist and mpi.tgz together pass the device tool's 64 MiB: hence the separate stash)
set -uo pipefail
root=$(git rev-parse --show-toplevel 2>/dev/null || pwd); cd "$root"
case ${1:-} in
  pack)
    d=$(mktemp -d); r=$(mktemp -d)
    (cd "$d" && apt-get download openmpi-bin libopenmpi3 openmpi-common python3-mpi4py libpmix2 libhwloc15 libevent-core-2.1-7 \
      libevent-pthreads-2.1-7 libfabric1 libpsm2-2 libpsm-infinipath1 libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 \
      libxnvctrl0 libnuma1 libltdl7 libmunge2 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib >/dev/null) || exit 1
    for f in "$d"/*.deb; do dpkg -x "$f" "$r"; done
    # What a barrier does not need: docs, headers, static libraries, the stdlib's tests and tools.
    rm -rf "$r"/usr/share/doc "$r"/usr/share/man "$r"/usr/share/locale "$r"/usr/lib/x86_64-linux-gnu/openmpi/include
    for m in ensurepip idlelib pydoc_data lib2to3 test tkinter unittest distutils; do rm -rf "$r/usr/lib/python3.11/$m"; done
    find "$r" -name '*.a' -delete
    mkdir -p .device && tar -C "$r" -cJf .device/mpi.tgz . && rm -rf "$d" "$r" && ls -la .device/mpi.tgz ;;
  stash) mkdir -p /tmp/mpi && tar -C /tmp/mpi -xJf .device/mpi.tgz ;;
  run|quiet2)
    [ -x /tmp/mpi/usr/bin/python3.11 ] || { echo "no /tmp/mpi: run 'stash' with .device/mpi.tgz first" >&2; exit 1; }
    mkdir -p /tmp/mpi/bin && ln -sf /tmp/mpi/usr/bin/mpirun.openmpi /tmp/mpi/bin/mpirun
    export PATH=/tmp/mpi/bin:$PATH LD_LIBRARY_PATH=/tmp/mpi/usr/lib/x86_64-linux-gnu:/tmp/mpi/usr/lib/x86_64-linux-gnu/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
      OPAL_PREFIX=/tmp/mpi/usr PYTHONHOME=/tmp/mpi/usr PYTHONPATH=/tmp/mpi/usr/lib/python3/dist-packages
    OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
    py=/tmp/mpi/usr/bin/python3.11
    if [ "$1" = quiet2 ]; then
      # The 2-core rows of issue 14 without the shared machine's load: two of this host's idle cores.
      # With BASE_TGZ (a tarball of another checkout's dist/, as build-ab.sh takes it) that build alternates with
      # this one, each line labelled {"which": "base"|"this", "round": r}.
      which="this"; base=/tmp/quiet2-base
      if [ -n "${BASE_TGZ:-}" ]; then
        mkdir -p "$base" && tar -C "$base" -xzf "$BASE_TGZ" && ln -sfn "$root/node_modules" "$base/node_modules" && cp package.json "$base/"
        which="base this"
      fi
      label() { node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{for(const l of s.split('\n')){if(!l.startsWith('{'))continue;console.log(JSON.stringify(Object.assign(JSON.parse(l),JSON.parse(process.argv[1]))))}})" "$1"; }
      for r in $(seq "${LAUNCH_ROUNDS:-2}"); do for b in $which; do
        d=dist; [ "$b" = base ] && d=$base/dist
        lab="{\"which\":\"$b\",\"round\":$r}"
        taskset -c 0,1 node "$d/cli.js" bench launch -n 4 --reps 7 --python "$py" --json 2>>"$OUT/quiet2.log" | label "$lab" | tee -a "$OUT/quiet2-launch.jsonl"
        taskset -c 0,1 node "$d/cli.js" bench launch -n 2 --reps 7 --python "$py" --json 2>>"$OUT/quiet2.log" | label "$lab" | tee -a "$OUT/quiet2-launch.jsonl"
        taskset -c 0,1 node "$d/cli.js" bench comm --rounds 5 --fresh 100 --python "$py" --json 2>>"$OUT/quiet2.log" | label "$lab" | tee -a "$OUT/quiet2-comm.jsonl"
      done; done
      exit 0
    fi
    for n in ${LAUNCH_RANKS:-4 8}; do for r in $(seq "${LAUNCH_ROUNDS:-2}"); do
      node dist/cli.js bench launch -n "$n" --reps 7 --python "$py" --json 2>>"$OUT/launch.log" | tee -a "$OUT/launch.jsonl"
    done; done ;;
  *) echo "usage: bash scripts/gpu/mpi-launch.sh pack|stash|run|quiet2" >&2; exit 2 ;;
esac
