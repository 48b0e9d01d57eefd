#!/usr/bin/env bash
# Serve the judge model with vLLM's OpenAI-compatible server on this node, at 127.0.0.1:PORT, and wait until it is
# healthy. Run on each judge node before Ray starts there (the judge node type's worker_setup_commands in
# cluster/aws.yaml and cluster/gcp.yaml), so judge actors never reach a node whose server is still loading.
#
#   usage: start_judge_server.sh MODEL TENSOR_PARALLEL_SIZE [PORT]
#
# MODEL must equal judge.model in the training config (configs/llama8b.yaml; tests/test_cluster.py checks it) and
# PORT the port of judge.base_url. Idempotent: returns at once when a server already answers on PORT. Bounded: gives
# up after JUDGE_START_TIMEOUT_S seconds (default 2400: a 70B download plus engine start) and prints the log tail.
set -euo pipefail

model="${1:?usage: start_judge_server.sh MODEL TENSOR_PARALLEL_SIZE [PORT]}"
tp="${2:?usage: start_judge_server.sh MODEL TENSOR_PARALLEL_SIZE [PORT]}"
port="${3:-8000}"
timeout_s="${JUDGE_START_TIMEOUT_S:-2400}"
log="${JUDGE_SERVER_LOG:-/tmp/waltz-judge-server.log}"

healthy() {
  python - "http://127.0.0.1:${port}/health" <<'PY' >/dev/null 2>&1
import sys
import urllib.request

urllib.request.urlopen(sys.argv[1], timeout=5)
PY
}

if healthy; then
  echo "judge server already answers on 127.0.0.1:${port}"
  exit 0
fi

# setsid + nohup: the server outlives the setup command's shell. Loopback only: the judge actors run on this node.
setsid nohup vllm serve "$model" \
  --host 127.0.0.1 --port "$port" \
  --served-model-name "$model" \
  --tensor-parallel-size "$tp" --distributed-executor-backend mp \
  --dtype bfloat16 --max-model-len 8192 --gpu-memory-utilization 0.90 \
  >"$log" 2>&1 </dev/null &
pid=$!

deadline=$((SECONDS + timeout_s))
until healthy; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "judge server (pid $pid) exited before it was healthy; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "judge server not healthy after ${timeout_s} s; stopping pid $pid. Last lines of $log:" >&2
    tail -n 40 "$log" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
  fi
  sleep 10
done
echo "judge server up: ${model} on 127.0.0.1:${port} (pid ${pid}, log ${log})"
