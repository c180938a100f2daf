-- wrk's script for scripts/bench_serving.py: POSTs the request bodies of a file (one JSON
-- document per line) in turn; after `limit` answers it stops sending and writes LIMIT
-- (bench_serving.py then ends wrk with SIGINT, as Ctrl-C would), and at the end one
-- JSON line. wrk's own run lasts -d; our clock runs from the first request to the
-- limit-th answer (one thread: -t1).
--   wrk -t1 -cC -dMAXs -s scripts/bench_serving.lua URL -- BODIES_FILE LIMIT
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } timespec;
  int clock_gettime(int clock, timespec *now);
]]
local now_ts = ffi.new("timespec")
local function now()
  ffi.C.clock_gettime(1, now_ts)  -- CLOCK_MONOTONIC
  return tonumber(now_ts.tv_sec) + tonumber(now_ts.tv_nsec) / 1e9
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  limit = tonumber(args[2])
  sent, answered, refused, first, last = 0, 0, 0, 0, 0
  headers = {["Content-Type"] = "application/json"}
end

function request()
  sent = sent + 1
  if sent == 1 then first = now() end
  return wrk.format("POST", nil, headers, bodies[(sent - 1) % #bodies + 1])
end

function response(status, _, body)
  if answered >= limit then return end
  answered = answered + 1
  if status ~= 200 or not string.find(body, '"digit"', 1, true) then
    refused = refused + 1
  end
  if answered == limit then
    last = now()
    wrk.thread:stop()
    io.write("LIMIT\n")
    io.flush()
  end
end

function done(summary, latency, _)
  local answered_all, refused_all, seconds = 0, 0, 0
  for _, thread in ipairs(threads) do
    answered_all = answered_all + thread:get("answered")
    refused_all = refused_all + thread:get("refused")
    seconds = math.max(seconds, thread:get("last") - thread:get("first"))
  end
  local e = summary.errors
  io.write(string.format(
    '{"answered": %d, "refused": %d, "seconds": %.6f, "p50_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "socket_errors": %d}\n',
    answered_all, refused_all, seconds, latency:percentile(50),
    latency:percentile(99), latency.max, e.connect + e.read + e.write + e.timeout))
end
