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
# the cache uses, against the base plus EDITS code layers.
#
# Environment: PROFILE=release|debug (default release: builds lamina --release first; debug
# measures a debug build), GEN (the tree generator), MB (layer 2 size), BENCH_DIR (scratch directory,
# default a new one under /tmp, removed on exit), LAMINA_BENCH_KEEP=1 keeps it, LAMINA_ROOTFS
# (overlay, copy or auto) passed through; SYNC=0 skips the `sync` before the first invoke.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
EDITS=${1:-10}
MB=${MB:-150}
PROFILE=${PROFILE:-release}
GEN=${GEN:-$ROOT/../shared/bench/gen-tree.py}
PY=/usr/bin/python3.11

die() { echo "inner-loop.sh: $*" >&2; exit 1; }
[[ $EDITS =~ ^[1-9][0-9]*$ ]] || die "EDITS must be a positive number, not '$EDITS'"
[ -x "$PY" ] || die "$PY is needed: the base image is assembled from the host's python3.11"
[ -f "$GEN" ] || die "the workload generator $GEN is missing"

case $PROFILE in
  release) cargo build --release -q; LAMINA=${CARGO_TARGET_DIR:-$ROOT/target}/release/lamina ;;
  debug) cargo build -q; LAMINA=${CARGO_TARGET_DIR:-$ROOT/target}/debug/lamina ;;
  *) die "PROFILE is release or debug, not '$PROFILE'" ;;
esac

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
rm -rf base1 base2
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

cache_bytes=$(du -sb "$LAMINA_CACHE_DIR" | cut -f1)
code_bytes=$(du -sb fn | cut -f1)
echo "cache after $EDITS edits: $((cache_bytes / 1048576)) MB (base $((BASE_BYTES / 1048576)) MB + $EDITS code layers of ~$((code_bytes / 1024)) KB; the base is held twice: its gzip blobs and its unpacked layers)"
"$LAMINA" cache du
