#!/usr/bin/env bash
# lamina against its peers on the standard workload, in one run; see docs/benchmarks.md.
#
#   benches/compare.sh [RUNS]        RUNS measurements of each command (default 5), medians shown
#
# Generates the 200 MB tree with ../shared/bench/gen-tree.py, installs the peers it needs from
# Debian when missing (pigz, umoci, skopeo, docker-registry, time), builds lamina --release, then
# measures: 1. building a layer of the tree; 2. pushing it to a fresh loopback registry;
# 3. pushing it again when every blob is there; 4. rebuilding (and re-pushing) after a one-file
# change; 5. a cold build and push of the tree as a function, against buildah bud (vfs storage,
# --layers, chroot isolation) + buildah push of the equivalent Dockerfile; 6. a one-file change
# on a 200 MB base, built and pushed with the Lambda gate on; and the peak RSS of each. Everything runs on 127.0.0.1; every process it starts is
# stopped on exit. Environment: MB (tree size, default 200), BENCH_DIR (scratch directory,
# default a new one under /tmp, removed on exit), LAMINA_BENCH_KEEP=1 keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-5}
MB=${MB:-200}
GEN=$ROOT/../shared/bench/gen-tree.py
[ -f "$GEN" ] || GEN=/work/shared/bench/gen-tree.py
LEVEL_GZIP=6

die() { echo "compare.sh: $*" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
[ -f "$GEN" ] || die "the workload generator $GEN is missing: it lives in shared/bench/ beside the repository (../shared/bench/gen-tree.py)"
command -v python3 >/dev/null || die "python3 is needed to run $GEN"

# --- peers, from Debian, only when missing ---------------------------------------------------
need=()
for pair in pigz:pigz umoci:umoci skopeo:skopeo docker-registry:docker-registry /usr/bin/time:time curl:curl buildah:buildah; do
  bin=${pair%%:*}; pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >&2
fi

# LAMINA_BIN=path measures another lamina binary (an earlier build, say) with this script.
if [ -n "${LAMINA_BIN:-}" ]; then
  LAMINA=$LAMINA_BIN
else
  echo "building lamina (release)" >&2
  cargo build --release --locked --quiet
  LAMINA=$ROOT/target/release/lamina
fi

# --- scratch space and cleanup ---------------------------------------------------------------
if [ -n "${BENCH_DIR:-}" ]; then W=$BENCH_DIR; mkdir -p "$W"; else W=$(mktemp -d /tmp/lamina-bench.XXXXXX); fi
REG_PID=""
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
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
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
# The whole tree is read before any timing, so every command finds it in the page cache.
tar -C "$TREE" -cf - . | wc -c >/dev/null

# --- a loopback registry, fresh on demand ----------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stop_registry() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; REG_PID=""; fi
}
start_registry() {
  stop_registry
  rm -rf "$W/registry"
  mkdir -p "$W/registry/data"
  REG=127.0.0.1:$(free_port)
  export REG
  cat >"$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $W/registry/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REG
  secret: lamina-bench
EOF
  docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do
    curl -fs "http://$REG/v2/" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  cat "$W/registry/log" >&2
  die "docker-registry did not come up on $REG"
}
clear_skopeo_cache() { rm -rf "$HOME/.local/share/containers/cache" /var/lib/containers/cache 2>/dev/null || true; }

# --- measuring -------------------------------------------------------------------------------
# measure KEY PREP CMD: run PREP (untimed) then CMD, RUNS times; records the median wall time (s)
# and the median peak RSS (KiB, the largest process of CMD) under KEY.
declare -A T RSS
measure() {
  local key=$1 prep=$2 cmd=$3 i t0 t1 times=() rss=()
  for ((i = 0; i < RUNS; i++)); do
    eval "$prep"
    t0=$(date +%s%N)
    if ! /usr/bin/time -f %M -o "$W/rss" bash -c "$cmd" >"$W/out" 2>"$W/err"; then
      cat "$W/err" >&2
      die "$key failed: $cmd"
    fi
    t1=$(date +%s%N)
    times+=("$(((t1 - t0) / 1000000))")
    rss+=("$(tail -n1 "$W/rss")")
  done
  T[$key]=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m/1000}')
  RSS[$key]=$(printf '%s\n' "${rss[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f", m}')
  echo "  $key: ${T[$key]} s, ${RSS[$key]} KiB" >&2
}
biggest_blob() { ls -S "$1/blobs/sha256" | head -n1 | xargs -I{} stat -c %s "$1/blobs/sha256/{}"; }

TAR="tar -C '$TREE' --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - ."
OCI=$W/lamina-oci
UMOCI=$W/umoci

echo "1. layer build" >&2
measure build_lamina "rm -rf '$OCI'" \
  "'$LAMINA' build --layer '$TREE:/var/task' --base scratch --to 'oci:$OCI:latest' --no-cache -q"
SIZE_lamina=$(biggest_blob "$OCI")
measure build_gzip "rm -f '$W/layer.tar.gz'" "$TAR | gzip -$LEVEL_GZIP > '$W/layer.tar.gz'"
SIZE_gzip=$(stat -c %s "$W/layer.tar.gz")
measure build_pigz "rm -f '$W/layer.tar.gz'" "$TAR | pigz -$LEVEL_GZIP > '$W/layer.tar.gz'"
SIZE_pigz=$(stat -c %s "$W/layer.tar.gz")
measure build_umoci \
  "rm -rf '$UMOCI' && umoci init --layout '$UMOCI' && umoci new --image '$UMOCI:latest'" \
  "umoci insert --image '$UMOCI:latest' '$TREE' /var/task"
SIZE_umoci=$(biggest_blob "$UMOCI")

echo "2. push to a fresh loopback registry" >&2
measure push_lamina "start_registry" \
  "'$LAMINA' push 'oci:$OCI:latest' \"docker://\$REG/bench/fn:latest\" --no-lambda-check -q"
measure push_skopeo "start_registry; clear_skopeo_cache" \
  "skopeo copy -q --dest-tls-verify=false 'oci:$OCI:latest' \"docker://\$REG/bench/fn:latest\""

echo "3. push again, every blob already there" >&2
start_registry
"$LAMINA" push "oci:$OCI:latest" "docker://$REG/bench/fn:latest" --no-lambda-check -q >/dev/null
measure repush_lamina ":" \
  "'$LAMINA' push 'oci:$OCI:latest' 'docker://$REG/bench/fn:latest' --no-lambda-check -q"
measure repush_skopeo "clear_skopeo_cache" \
  "skopeo copy -q --dest-tls-verify=false 'oci:$OCI:latest' 'docker://$REG/bench/fn:latest'"

echo "4. rebuild after one handler file changes" >&2
# The tree as dependencies under /opt, and a one-file handler under /var/task; the layer cache
# (under \$LAMINA_CACHE_DIR) is warm from the first build.
mkdir -p "$W/handler"
printf 'def handle(event, context):\n    return event\n' >"$W/handler/handler.py"
REBUILD="'$LAMINA' build --layer '$TREE:/opt' --layer '$W/handler:/var/task' --base scratch -q"
rm -rf "$LAMINA_CACHE_DIR"
bash -c "$REBUILD --to 'oci:$W/rebuild:latest'" >/dev/null
N=0
touch_handler() { N=$((N + 1)); printf '# change %s\n' "$N" >>"$W/handler/handler.py"; }
measure rebuild_lamina "touch_handler" "$REBUILD --to 'oci:$W/rebuild:latest'"
bash -c "$REBUILD --to 'docker://$REG/bench/fn:rebuild' --no-lambda-check" >/dev/null
measure rebuild_push_lamina "touch_handler" "$REBUILD --to 'docker://$REG/bench/fn:rebuild' --no-lambda-check"
stop_registry

echo "5. cold build and push of the function (fresh registry, empty caches)" >&2
# The same image both ways: the tree under /var/task on scratch, with a CMD.
mkdir -p "$W/ctx"
rm -rf "$W/ctx/tree" && cp -a "$TREE" "$W/ctx/tree"
printf 'FROM scratch\nCOPY tree/ /var/task/\nCMD ["handler.handle"]\n' >"$W/ctx/Dockerfile"
BUILDAH="buildah --storage-driver vfs --root '$W/buildah-root' --runroot '$W/buildah-run'"
measure cold_lamina "start_registry; rm -rf '$LAMINA_CACHE_DIR'" \
  "'$LAMINA' build --layer '$TREE:/var/task' --base scratch --cmd handler.handle --to \"docker://\$REG/bench/cold:latest\" --no-lambda-check -q"
measure cold_buildah "start_registry; rm -rf '$W/buildah-root' '$W/buildah-run'" \
  "$BUILDAH bud --isolation chroot --layers -q -t bench-cold '$W/ctx' && $BUILDAH push --tls-verify=false bench-cold \"docker://\$REG/bench/cold:latest\""
stop_registry

echo "6. a one-file change on a 200 MB base, built and pushed with the Lambda gate on" >&2
# The bundled fixture (it passes the gate) plus the tree under /opt is the base; the function
# adds the one-file handler. The first build verifies the base and warms the caches, so each
# measured run rebuilds one small layer, runs the gate over the whole image and pushes it.
start_registry
rm -rf "$LAMINA_CACHE_DIR" "$W/base200"
"$LAMINA" build -q -f "$ROOT/fixtures/lamina.toml" --layer "$TREE:/opt" --to "oci:$W/base200:latest" >/dev/null
ONBASE="'$LAMINA' build -q --base 'oci:$W/base200:latest' --layer '$W/handler:/var/task'"
bash -c "$ONBASE --to \"docker://\$REG/bench/onbase:latest\"" >/dev/null
measure onbase_lamina "touch_handler" "$ONBASE --to \"docker://\$REG/bench/onbase:latest\""
stop_registry

# --- the table -------------------------------------------------------------------------------
mb() { awk -v b="$1" 'BEGIN {printf "%.1f MB", b / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.1f%%", (a / b - 1) * 100}'; }
row() { # LABEL KEY [RATIO-BASE-KEY [SIZE]]
  local vs="" size="" vsgz=""
  [ -n "${3:-}" ] && vs=$(ratio "${T[$2]}" "${T[$3]}")
  [ -n "${4:-}" ] && { size=$(mb "$4"); vsgz=$(pct "$4" "$SIZE_gzip"); }
  printf '| %-38s | %7s s | %6s | %5.1f MiB | %9s | %10s |\n' "$1" "${T[$2]}" "$vs" \
    "$(awk -v k="${RSS[$2]}" 'BEGIN {print k / 1024}')" "$size" "$vsgz"
}
section() { printf '| %-38s | %9s | %6s | %9s | %9s | %10s |\n' "**$1**" "" "" "" "" ""; }
FILES=$(find "$TREE" | wc -l)
TREE_BYTES=$(du -sb "$TREE" | cut -f1)
TAR_BYTES=$(bash -c "$TAR" | wc -c)
echo
echo "lamina benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), lamina $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+changes')"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), nproc $(nproc), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr); load average before: $LOAD"
echo "workload: gen-tree.py --mb $MB: $FILES files and folders, $(mb "$TREE_BYTES"), tar stream $(mb "$TAR_BYTES")"
echo "medians of $RUNS runs; ratio = time / lamina's time; RSS = peak of the largest process"
echo
printf '| %-38s | %9s | %6s | %9s | %9s | %10s |\n' "" "time" "ratio" "peak RSS" "output" "vs gzip -$LEVEL_GZIP"
echo "|----------------------------------------|----------:|-------:|----------:|----------:|-----------:|"
section "1. layer build of the tree"
row "lamina build (default level)" build_lamina build_lamina "$SIZE_lamina"
row "tar -c \\| gzip -$LEVEL_GZIP" build_gzip build_lamina "$SIZE_gzip"
row "tar -c \\| pigz -$LEVEL_GZIP" build_pigz build_lamina "$SIZE_pigz"
row "umoci insert" build_umoci build_lamina "$SIZE_umoci"
section "2. push to a fresh registry"
row "lamina push" push_lamina push_lamina
row "skopeo copy" push_skopeo push_lamina
section "3. push again, all blobs there"
row "lamina push" repush_lamina repush_lamina
row "skopeo copy" repush_skopeo repush_lamina
section "4. one handler file changed"
row "lamina build (layer cache warm)" rebuild_lamina
row "lamina build --to docker:// (re-push)" rebuild_push_lamina
section "5. cold build + push of the function"
row "lamina build --to docker://" cold_lamina cold_lamina
row "buildah bud + buildah push" cold_buildah cold_lamina
section "6. one file changed, on a 200 MB base"
row "lamina build --to docker:// (gate on)" onbase_lamina
