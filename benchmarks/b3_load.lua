-- B3's wrk script: POST a different, freshly signed body on every request.
-- The harness writes one JSON body per line just before each run (wrk's LuaJIT has
-- no sha256); wrapping around would replay, so it writes more than wrk can send.
local bodies, n, i = {}, 0, 0
local headers = {["Content-Type"] = "text/plain;charset=UTF-8"}

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("POST", "/api/generate", headers, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
