# llama-server for tests and the demo. Source after `eval "$(scripts/provision-inference)"`.
# `llama_start THREADS LOG` exports ENGINE_URL and LLAMA_PID; `llama_stop` stops it.
# LLAMA_EXTRA_ARGS adds arguments (word-split), e.g. "--api-key-file FILE".

llama_start() {
  local threads=$1 log=$2 port i
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$LLAMA_SERVER" -m "$SMOLLM2_GGUF" -t "$threads" --host 127.0.0.1 --port "$port" \
    -np 4 -c 8192 --log-disable ${LLAMA_EXTRA_ARGS:-} >"$log" 2>&1 &
  LLAMA_PID=$!
  ENGINE_URL=http://127.0.0.1:$port
  for i in $(seq 1 120); do
    if curl -fsS "$ENGINE_URL/health" >/dev/null 2>&1; then
      export ENGINE_URL LLAMA_PID
      return 0
    fi
    kill -0 "$LLAMA_PID" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.5
  done
  echo "llama-server did not become healthy; log: $log" >&2
  return 1
}

llama_stop() {
  [[ -n ${LLAMA_PID:-} ]] && kill "$LLAMA_PID" 2>/dev/null && wait "$LLAMA_PID" 2>/dev/null
  return 0
}
