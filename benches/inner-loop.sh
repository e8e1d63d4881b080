#!/usr/bin/env bash
# The inner loop of issue 15, measured: a Python function on a ~200 MB Debian-like base given as
# a docker-archive (as `docker save` writes it), run with `lamina invoke`.
#
#   benches/inner-loop.sh [EDITS]    EDITS edit -> rebuild -> invoke rounds (default 10)
#
# The base is assembled from this host's files (no registry, no Docker): layer 1 is the host's
# python3.11 with the libraries it loads and its standard library; layer 2 is MB (default 150)
# of the bench tree (../shared/bench/gen-tree.py) under /opt/deps, standing in for
# dependencies. The function is a one-file handler behind a Lambda runtime client written
# with the standard library only (AWS's awslambdaric is not installed here; the client speaks
# the same Runtime API). It measures, with a fresh cache: the first build, the first invoke
# (unpacking the root file system included), then EDITS rounds of: change one line of the
# handler -> lamina build -> lamina invoke (answered with the new code), and finally the disk
# the cache uses, against the base plus EDITS code layers: the cache alone, and what it adds
# beyond the output layout (whose blobs the cache shares as hard links), each in apparent bytes
# (du -sb) and in blocks on disk (what `lamina cache du` counts).
#
# Environment: LAMINA (a lamina binary to measure; else PROFILE=release|debug, default release:
# builds lamina --release first; debug measures a debug build), GEN (the tree generator), MB (layer 2 size), BENCH_DIR (scratch directory,
# default a new one under /tmp, removed on exit), LAMINA_BENCH_KEEP=1 keeps it, LAMINA_ROOTFS
# (overlay, copy or auto) passed through; SYNC=0 skips the `sync` before the first invoke.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
EDITS=${1:-10}
MB=${MB:-150}
PROFILE=${PROFILE:-release}
GEN=${GEN:-$ROOT/../shared/bench/gen-tree.py}
# A worktree under wt/ finds the shared generator one level further up.
[ -f "$GEN" ] || [ ! -f "$ROOT/../../shared/bench/gen-tree.py" ] || GEN=$ROOT/../../shared/bench/gen-tree.py
PY=/usr/bin/python3.11

die() { echo "inner-loop.sh: $*" >&2; exit 1; }
[[ $EDITS =~ ^[1-9][0-9]*$ ]] || die "EDITS must be a positive number, not '$EDITS'"
[ -x "$PY" ] || die "$PY is needed: the base image is assembled from the host's python3.11"
[ -f "$GEN" ] || die "the workload generator $GEN is missing"

if [ -n "${LAMINA:-}" ]; then
  [ -x "$LAMINA" ] || die "LAMINA=$LAMINA is not an executable"
  PROFILE="given"
else case $PROFILE in
  release) cargo build --release -q; LAMINA=${CARGO_TARGET_DIR:-$ROOT/target}/release/lamina ;;
  debug) cargo build -q; LAMINA=${CARGO_TARGET_DIR:-$ROOT/target}/debug/lamina ;;
  *) die "PROFILE is release or debug, not '$PROFILE'" ;;
esac; fi

BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/lamina-inner-loop.XXXXXX)}
mkdir -p "$BENCH_DIR"
cleanup() {
  if [ "${LAMINA_BENCH_KEEP:-}" = 1 ]; then
    echo "kept $BENCH_DIR" >&2
  else
    "$LAMINA" cache prune --all >/dev/null 2>&1 || true
    rm -rf "$BENCH_DIR"
  fi
}
trap cleanup EXIT
export LAMINA_CACHE_DIR=$BENCH_DIR/cache
cd "$BENCH_DIR"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# --- the base, as a docker-archive -----------------------------------------------------------
mkdir -p base1 base2/opt
for f in $PY $(ldd $PY | awk '/=>/ { print $3 } /ld-linux/ { print $1 }'); do
  mkdir -p "base1$(dirname "$f")"
  cp -L "$f" "base1$f"
done
mkdir -p base1/usr/lib base1/tmp base1/var/task
cp -a /usr/lib/python3.11 base1/usr/lib/
python3 "$GEN" base2/opt/deps --mb "$MB" >/dev/null
# The base as files (apparent bytes, and blocks on this file system), for the cache figures.
BASE_FILES=$(du -scb base1 base2 | tail -1 | cut -f1)
BASE_FILES_DISK=$(du -sc -B1 base1 base2 | tail -1 | cut -f1)
python3 - "$(dpkg --print-architecture 2>/dev/null || echo amd64)" <<'EOF'
import hashlib, io, json, sys, tarfile
arch = {"amd64": "amd64", "arm64": "arm64"}.get(sys.argv[1], "amd64")
layers = []
for d in ("base1", "base2"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.add(d, arcname=".", recursive=True)
    layers.append(buf.getvalue())
config = json.dumps({
    "architecture": arch, "os": "linux",
    "config": {"Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "WorkingDir": "/var/task"},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]},
}).encode()
manifest = json.dumps([{"Config": "config.json", "RepoTags": ["bench-base:1"],
                        "Layers": [f"l{i}/layer.tar" for i in range(len(layers))]}]).encode()
with tarfile.open("base.tar", "w") as t:
    for name, data in [("config.json", config)] + [(f"l{i}/layer.tar", l) for i, l in enumerate(layers)] + [("manifest.json", manifest)]:
        info = tarfile.TarInfo(name); info.size = len(data); info.mtime = 1700000000
        t.addfile(info, io.BytesIO(data))
EOF
# base1 and base2 stay until the end: on ext4 without a journal (this machine's disk), for some
# seconds after ~16,000 files are deleted (5 s, 35 while the inode tables are not written back)
# the kernel skips their inode numbers one by one each time it allocates an inode in their
# groups (`recently_deleted` in fs/ext4/ialloc.c). lamina's cache keeps its unpacks out of
# such groups (docs/local-runtime.md); the bench does not add deletions of its own anyway.
BASE_BYTES=$(stat -c %s base.tar)

# --- the function ----------------------------------------------------------------------------
mkdir -p fn
cat > fn/bootstrap.py <<'EOF'
# A Lambda runtime client in the standard library: next invocation, handler, response.
import json, os, sys, urllib.request
sys.path.insert(0, "/var/task")
import app
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read() or b"{}")
    body = json.dumps(app.handler(event, None)).encode()
    urllib.request.urlopen(urllib.request.Request(api + rid + "/response", data=body, method="POST")).read()
EOF
edit() { printf 'def handler(event, context):\n    return {"version": %d}\n' "$1" > fn/app.py; }
edit 0

build() {
  "$LAMINA" build --base "docker-archive:$BENCH_DIR/base.tar" --layer "$BENCH_DIR/fn:/var/task" \
    --entrypoint '["/usr/bin/python3.11", "/var/task/bootstrap.py"]' --to "oci:$BENCH_DIR/out:fn" -q >/dev/null
}
invoke() { "$LAMINA" invoke "oci:$BENCH_DIR/out:fn" 2>invoke.err; }

echo "lamina: $LAMINA ($PROFILE); base: docker-archive of $((BASE_BYTES / 1048576)) MB; rootfs: ${LAMINA_ROOTFS:-auto}"
t0=$(now); build; t1=$(now)
echo "first build (the base gzipped once):          $(secs "$t0" "$t1") s"
# The base archive and the first build wrote ~350 MB: on a slow disk their write-back would
# otherwise be timed as part of the invoke. SYNC=0 measures with it.
[ "${SYNC:-1}" = 0 ] || sync
t0=$(now); out=$(invoke); t1=$(now)
[ "$out" = '{"version": 0}' ] || die "the first invoke answered $out: $(cat invoke.err)"
echo "first invoke (unpacking the root included):   $(secs "$t0" "$t1") s   [$(grep -o 'unpacked [0-9]* of the [0-9]* layers' invoke.err)]$([ "${SYNC:-1}" = 0 ] && echo ' (no sync before)')"

rounds=()
for i in $(seq 1 "$EDITS"); do
  edit "$i"
  t0=$(now); build; t1=$(now); out=$(invoke); t2=$(now)
  [ "$out" = "{\"version\": $i}" ] || die "edit $i: the invoke answered $out: $(cat invoke.err)"
  rounds+=("$(secs "$t0" "$t2")")
  echo "edit $i: rebuild $(secs "$t0" "$t1") s + invoke $(secs "$t1" "$t2") s = $(secs "$t0" "$t2") s   [$(grep -o 'unpacked [0-9]* of the [0-9]* layers' invoke.err || echo reused)]"
done
median=$(printf '%s\n' "${rounds[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
echo "edit -> rebuild -> answered invoke, median of $EDITS: $median s"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
code_bytes=$(du -sb fn | cut -f1)
# The cache alone, in apparent bytes (du -sb) and in blocks (what `lamina cache du` counts).
cache_bytes=$(du -sb "$LAMINA_CACHE_DIR" | cut -f1)
cache_disk=$(du -s -B1 "$LAMINA_CACHE_DIR" | cut -f1)
# What the cache adds beyond the output layout the builds wrote: du counts a file with several
# names once, under the first argument, and the cache's blobs are hard links to the layout's.
added_bytes=$(du -sb "$BENCH_DIR/out" "$LAMINA_CACHE_DIR" | tail -1 | cut -f1)
added_disk=$(du -s -B1 "$BENCH_DIR/out" "$LAMINA_CACHE_DIR" | tail -1 | cut -f1)
goal=$((BASE_BYTES + EDITS * code_bytes))
verdict() { if [ "$1" -lt "$goal" ]; then echo "under"; else echo "OVER"; fi; }
echo "base: $(mib "$BASE_BYTES") as a tar; as files $(mib "$BASE_FILES") ($(mib "$BASE_FILES_DISK") on disk); goal: under the tar plus $EDITS code layers of ~$((code_bytes / 1024)) KiB = $(mib "$goal")"
echo "cache after $EDITS edits, alone:                  $(mib "$cache_bytes") ($(mib "$cache_disk") on disk): $(verdict "$cache_bytes") the goal, $(verdict "$cache_disk") on disk (it holds the base twice: gzip blobs for builds, unpacked layers for runs)"
echo "cache after $EDITS edits, beyond the output layout: $(mib "$added_bytes") ($(mib "$added_disk") on disk): $(verdict "$added_bytes") the goal, $(verdict "$added_disk") on disk (its blobs are the layout's files, hard-linked)"
"$LAMINA" cache du
