-- POST a fixed JSON body (file named by WRK_BODY_FILE) with an optional bearer key (WRK_API_KEY).
-- WRK_MAX_REQUESTS > 0 stops the thread after that many responses and creates WRK_DONE_FILE;
-- the harness then sends wrk SIGINT (wrk prints its summary), so a soak chunk is a request
-- count, not a duration (-d stays the upper bound). Use with -t1. response() costs wrk a
-- little per request, so it is only defined then.
-- done() prints one machine-readable line: "WRKJSON {...}" with latency percentiles in µs.
local path = os.getenv("WRK_PATH") or "/"
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.path = path
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("WRK_API_KEY")
if key ~= nil and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

local limit = tonumber(os.getenv("WRK_MAX_REQUESTS") or "0")
if limit > 0 then
  local count = 0
  function response(status, headers, resp_body)
    count = count + 1
    if count == limit then
      wrk.thread:stop()
      local marker = io.open(os.getenv("WRK_DONE_FILE"), "w")
      marker:close()
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"lat_mean_us":%.1f,"lat_max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
