-- wrk script: POST the JSON body in $WRK_BODY_FILE to the URL; print one machine-readable summary line.
-- $WRK_MAX_REQUESTS (optional): stop after that many responses (a fixed-count run; use -t1).
-- Used by bench/runner.py; by hand:
--   WRK_BODY_FILE=body.json wrk -t1 -c16 -d10s --latency -s bench/wrk/post.lua http://127.0.0.1:8300/message

local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

-- $WRK_CONTEXTS=N (optional): replace @CTX@ in the body with $WRK_CONTEXT_PREFIX .. (request number mod N),
-- i.e. N conversations that grow in turn (context_id of /message)
local contexts = tonumber(os.getenv("WRK_CONTEXTS") or "0") or 0
if contexts > 0 then
  local prefix, n, template = os.getenv("WRK_CONTEXT_PREFIX") or "bench-", 0, wrk.body
  request = function()
    n = n + 1
    return wrk.format(nil, nil, nil, (template:gsub("@CTX@", prefix .. (n % contexts))))
  end
end

local limit = tonumber(os.getenv("WRK_MAX_REQUESTS") or "0") or 0
if limit > 0 then
  -- wrk keeps sleeping for -d after a thread stops: $WRK_DONE_FILE tells the runner to end it (SIGINT)
  local seen = 0
  response = function(status, headers, body)
    seen = seen + 1
    if seen == limit then
      local marker = os.getenv("WRK_DONE_FILE")
      if marker then local m = io.open(marker, "w"); if m then m:write("done\n"); m:close() end end
      wrk.thread:stop()
    end
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_min_us":%d,"lat_p50_us":%d,"lat_p90_us":%d,' ..
    '"lat_p99_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.min, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
