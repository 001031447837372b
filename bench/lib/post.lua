-- wrk script: POST one prepared body over and over, then print the figures as one JSON line.
-- The body file and its Content-Type come from the environment (set by bench/lib/wrk.py), and
-- optionally one more header as "Name: value" in BENCH_HEADER (v2 binary: Inference-Header-Content-Length).
wrk.method = "POST"
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local extra = os.getenv("BENCH_HEADER")
if extra and extra ~= "" then
  local name, value = extra:match("^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "timeouts": %d, "non_2xx": %d,'
      .. ' "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, errors.connect + errors.read + errors.write, errors.timeout,
    errors.status, latency:percentile(50), latency:percentile(99), latency.max))
end
