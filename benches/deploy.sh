#!/usr/bin/env bash
# `lamina deploy` of the 200 MB bench function as an image, against moto (Lambda, IAM, ECR API)
# and a docker-registry (the ECR data plane) on 127.0.0.1; see docs/deploy.md.
#
#   benches/deploy.sh [RUNS]     RUNS measurements of the unchanged and one-file-change deploys
#                                (default 3), each printed, medians shown
#
# Measures: 1. the first deploy (build, push, CreateFunction, wait); 2. a re-deploy with nothing
# changed (goal: under 0.5 s: the layer cache, registry HEADs, one GetFunction, no write);
# 3. a deploy after a one-file change (goal: under 1.5 s: rebuild one layer, push it,
# UpdateFunctionCode, wait). moto answers Active/Successful at once, so the waits are one poll.
# Environment: LAMINA (the binary; default: a --release build in CARGO_TARGET_DIR or target/),
# MB (tree size, default 200), GEN (the generator, default ../shared/bench/gen-tree.py), LAMINA_BENCH_KEEP=1 keeps the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-3}
MB=${MB:-200}
GEN=${GEN:-$ROOT/../shared/bench/gen-tree.py}
die() { echo "deploy.sh: $*" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$RUNS'"
[ -f "$GEN" ] || die "the workload generator $GEN is missing (../shared/bench/gen-tree.py)"
for t in python3 moto_server docker-registry curl; do
  command -v "$t" >/dev/null || die "$t is needed (moto_server: pip install 'moto[server]')"
done
if [ -z "${LAMINA:-}" ]; then
  LAMINA=${CARGO_TARGET_DIR:-$ROOT/target}/release/lamina
  [ -x "$LAMINA" ] || cargo build --release >&2
fi
[ -x "$LAMINA" ] || die "no lamina binary at $LAMINA"

WORK=$(mktemp -d /tmp/lamina-deploy-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${LAMINA_BENCH_KEEP:-}" = 1 ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; die "$1 did not answer"; }

# --- peers -------------------------------------------------------------------------------------
MOTO_PORT=$(free_port)
(cd "$WORK" && exec moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1) &
PIDS+=($!)
REG_PORT=$(free_port)
mkdir -p "$WORK/registry"
cat >"$WORK/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: "127.0.0.1:$REG_PORT", secret: bench}
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOTO_PORT/moto-api/"
wait_http "http://127.0.0.1:$REG_PORT/v2/"

export AWS_ACCESS_KEY_ID=AKIABENCH AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=$WORK/aws-config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws-credentials
: >"$AWS_CONFIG_FILE"; : >"$AWS_SHARED_CREDENTIALS_FILE"
export LAMINA_CACHE_DIR=$WORK/cache
unset AWS_PROFILE SOURCE_DATE_EPOCH
ROLE=$(python3 - "$AWS_ENDPOINT_URL" <<'PY'
import json, sys, boto3
kw = dict(region_name="us-east-1", endpoint_url=sys.argv[1])
boto3.client("ecr", **kw).create_repository(repositoryName="bench/fn")
doc = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
      "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
print(boto3.client("iam", **kw).create_role(RoleName="bench", AssumeRolePolicyDocument=doc)["Role"]["Arn"])
PY
)

# --- the function -----------------------------------------------------------------------------
echo "generating the $MB MB tree" >&2
python3 "$GEN" "$WORK/fn" --mb "$MB" >/dev/null
# As compare.sh's rebuild: the tree as dependencies under /opt, a one-file handler under
# /var/task (the file the "one-file change" edits).
mkdir -p "$WORK/handler"
printf 'def handle(event, context):\n    return event\n' >"$WORK/handler/handler.py"
cat >"$WORK/lamina.toml" <<TOML
base = "scratch"
platform = "linux/amd64"
to = "docker://123456789012.dkr.ecr.us-east-1.amazonaws.com/bench/fn:latest"
[[layer]]
source = "fn"
dest = "/opt"
[[layer]]
source = "handler"
dest = "/var/task"
[config]
entrypoint = ["/opt/bootstrap"]
cmd = ["handler.handle"]
[deploy]
function_name = "bench"
role = "$ROLE"
memory = 512
TOML
FLAGS=(-q -f "$WORK/lamina.toml" --registry-endpoint "http://127.0.0.1:$REG_PORT"
       --insecure-registry "127.0.0.1:$REG_PORT" --no-lambda-check)

run() { # LABEL: one timed deploy, its stdout line kept
  local s e
  s=$(date +%s.%N)
  "$LAMINA" deploy "${FLAGS[@]}" >"$WORK/out" || { cat "$WORK/out"; die "deploy failed ($1)"; }
  e=$(date +%s.%N)
  python3 -c "print(f'{$e-$s:.3f}')"
}
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }

first=$(run first)
echo "first deploy:            ${first} s   ($(cat "$WORK/out"))"
same=(); change=()
for i in $(seq "$RUNS"); do
  t=$(run unchanged); same+=("$t")
  grep -q " unchanged " "$WORK/out" || die "the re-deploy was not 'unchanged': $(cat "$WORK/out")"
  echo "re-deploy, unchanged:    ${t} s"
done
for i in $(seq "$RUNS"); do
  echo "# change $i" >>"$WORK/handler/handler.py"
  t=$(run change); change+=("$t")
  grep -q " updated " "$WORK/out" || die "the deploy after a change did not update: $(cat "$WORK/out")"
  echo "one-file change:         ${t} s"
done
echo "median: unchanged $(median "${same[@]}") s (goal < 0.5 s), one-file change $(median "${change[@]}") s (goal < 1.5 s), $MB MB tree, lamina $("$LAMINA" --version | cut -d' ' -f2)"
