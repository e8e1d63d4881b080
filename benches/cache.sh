#!/usr/bin/env bash
# The registry as the build cache (docs/build-cache.md): what a fresh CI runner pays to build
# and push an unchanged function.
#
#   benches/cache.sh [RUNS]        RUNS measurements of each (default 5), medians shown
#
# Generates the 200 MB bench function with ../shared/bench/gen-tree.py, builds lamina
# --release (LAMINA_BIN=path measures another binary), starts docker-registry on 127.0.0.1,
# pushes the function once with --cache (the registry cache is then warm), then measures, each
# run from a fresh copy of the tree (new inodes and mtimes: a fresh clone) and an empty local
# cache:
#   1. build + push with the warm registry cache (--cache);
#   2. build + push without it (--cache none; every blob is in the registry already: HEAD
#      requests skip them, but the layer is read, tarred and compressed again);
#   3. the content key alone, on a warm and a cold page cache: a build to a layout whose local
#      cache knows the layer by content (so it only collects, hashes and links);
#      cold = `echo 3 > /proc/sys/vm/drop_caches` before each run (needs root; skipped otherwise);
#   4. a cold build + push (a new repository each run: nothing to skip) with the registry cache
#      on by default (the key computed, the cache written) and with --cache none: what the
#      default costs a push that builds.
# Environment: MB (tree size, default 200), BENCH_DIR (scratch directory, default a new one
# under /tmp, removed on exit), LAMINA_BENCH_KEEP=1 keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-5}
MB=${MB:-200}
GEN=$ROOT/../shared/bench/gen-tree.py
[ -f "$GEN" ] || GEN=/work/shared/bench/gen-tree.py

die() { echo "cache.sh: $*" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
[ -f "$GEN" ] || die "the workload generator gen-tree.py is missing (shared/bench/ beside the repository)"
for b in python3 docker-registry curl; do command -v "$b" >/dev/null || die "$b is needed"; done

if [ -n "${LAMINA_BIN:-}" ]; then
  LAMINA=$LAMINA_BIN
else
  echo "building lamina (release)" >&2
  cargo build --release --locked --quiet
  LAMINA=${CARGO_TARGET_DIR:-$ROOT/target}/release/lamina
fi

if [ -n "${BENCH_DIR:-}" ]; then W=$BENCH_DIR; mkdir -p "$W"; else W=$(mktemp -d /tmp/lamina-cache-bench.XXXXXX); fi
REG_PID=""
cleanup() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  if [ "${LAMINA_BENCH_KEEP:-}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export LAMINA_CACHE_DIR=$W/cache
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$W/xdg}

TREE=$W/tree
if [ ! -f "$TREE/bootstrap" ]; then
  echo "generating the workload ($MB MB)" >&2
  python3 "$GEN" "$TREE" --mb "$MB" >&2
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REG=127.0.0.1:$(free_port)
mkdir -p "$W/registry/data"
cat >"$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $W/registry/data
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REG
  secret: lamina-bench
EOF
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -fs "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.05; done
curl -fs "http://$REG/v2/" >/dev/null || { cat "$W/registry/log" >&2; die "docker-registry did not come up on $REG"; }

# measure KEY PREP CMD: PREP untimed, then CMD timed; RUNS times; the median wall time (s).
declare -A T
measure() {
  local key=$1 prep=$2 cmd=$3 i t0 t1 times=()
  for ((i = 0; i < RUNS; i++)); do
    eval "$prep"
    t0=$(date +%s%N)
    bash -c "$cmd" >"$W/out" 2>"$W/err" || { cat "$W/err" >&2; die "$key failed: $cmd"; }
    t1=$(date +%s%N)
    times+=("$(((t1 - t0) / 1000000))")
  done
  T[$key]=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m/1000}')
  echo "  $key: ${T[$key]} s (runs: ${times[*]} ms)" >&2
}

CLONE=$W/clone
# A fresh clone: a plain copy (new inodes, this moment's mtimes) and an empty local cache.
fresh_clone() { rm -rf "$CLONE" "$LAMINA_CACHE_DIR"; cp -r "$TREE" "$CLONE"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
BUILD="'$LAMINA' build -q --layer '$CLONE:/var/task' --base scratch --cmd handler.handle --no-lambda-check"
DEST="docker://$REG/bench/fn:latest"

echo "warming the registry cache (one build + push with --cache)" >&2
fresh_clone
bash -c "$BUILD --to '$DEST' --cache" >/dev/null

echo "1. fresh clone, empty local cache, warm registry cache: build + push" >&2
measure warm_registry_cache "fresh_clone" "$BUILD --to '$DEST' --cache"
echo "2. the same without the registry cache (blobs already in the registry)" >&2
measure no_registry_cache "fresh_clone" "$BUILD --to '$DEST' --cache none"

echo "3. the content key alone (a layout build found by content in the local cache)" >&2
KEYED="$BUILD --to 'oci:$W/keyed:latest'"
key_prep() { rm -rf "$CLONE" "$W/keyed"; cp -r "$TREE" "$CLONE"; }
key_prep; bash -c "$KEYED" >/dev/null   # the local cache now knows the layer by content
measure key_warm_page_cache "key_prep" "$KEYED"
if [ "$(id -u)" -eq 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
  measure key_cold_page_cache "key_prep; drop_caches" "$KEYED"
else
  echo "  key_cold_page_cache: skipped (dropping the page cache needs root)" >&2
fi

echo "4. cold build + push to a new repository: the default registry cache, and --cache none" >&2
COLD="docker://$REG/bench/cold-\$(date +%s%N):latest"
measure cold_default_cache "fresh_clone" "$BUILD --to \"$COLD\""
measure cold_no_cache "fresh_clone" "$BUILD --to \"$COLD\" --cache none"

echo
echo "lamina $("$LAMINA" --version 2>/dev/null | head -n1), $(nproc) cores, tree $(du -sm "$TREE" | cut -f1) MB, median of $RUNS"
printf '%-58s %8s\n' "fresh clone + push, warm registry cache (--cache)" "${T[warm_registry_cache]} s"
printf '%-58s %8s\n' "fresh clone + push, no registry cache" "${T[no_registry_cache]} s"
printf '%-58s %8s\n' "content key + link only, warm page cache" "${T[key_warm_page_cache]} s"
[ -n "${T[key_cold_page_cache]:-}" ] && printf '%-58s %8s\n' "content key + link only, cold page cache" "${T[key_cold_page_cache]} s"
printf '%-58s %8s\n' "cold build + push, default registry cache (written)" "${T[cold_default_cache]} s"
printf '%-58s %8s\n' "cold build + push, --cache none" "${T[cold_no_cache]} s"
exit 0
