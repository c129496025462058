-- wrk script: cycle over the URL paths listed (one a line) in the file
-- named by $BENCH_URLS; each thread starts at a different offset.
-- At the end prints one machine-readable line:
--   RESULT requests=N bytes=N seconds=S connect=N read=N write=N status=N timeout=N lat_mean_us=X lat_p99_us=X
local reqs = {}
local idx = 0
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local f = assert(os.getenv("BENCH_URLS"), "BENCH_URLS is not set")
  for line in io.lines(f) do
    if line ~= "" then reqs[#reqs + 1] = wrk.format("GET", line) end
  end
  assert(#reqs > 0, "no URLs in " .. f)
  idx = ((tid or 0) * 7919) % #reqs
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d bytes=%d seconds=%.6f connect=%d read=%d write=%d status=%d timeout=%d lat_mean_us=%.1f lat_p99_us=%.1f\n",
    summary.requests, summary.bytes, summary.duration / 1e6, e.connect, e.read, e.write,
    e.status, e.timeout, latency.mean, latency:percentile(99)))
end
