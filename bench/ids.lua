-- bench/ids.lua: wrk script of the small-object benchmark.
--
--   wrk -s bench/ids.lua URL -- PATH [FIRST COUNT]
--
-- Every request is a GET of PATH with "{id}" replaced by the next of the
-- ids FIRST .. FIRST+COUNT-1, each thread starting at its own offset, so a
-- lookup sees distinct ids.  Without "{id}" PATH is requested as it is.
-- At the end it prints one JSON line (prefix "RESULT ") with the request
-- count, duration, errors and latency percentiles (microseconds).

local threads = {}
local counter = 0

function setup(thread)
    thread:set("tid", counter)
    counter = counter + 1
    table.insert(threads, thread)
end

local path, prefix, suffix, first, count, n

function init(args)
    path = args[1] or "/"
    first = tonumber(args[2] or "1")
    count = tonumber(args[3] or "1")
    local s, e = string.find(path, "{id}", 1, true)
    if s then
        prefix = string.sub(path, 1, s - 1)
        suffix = string.sub(path, e + 1)
    end
    -- threads start far apart in the id range
    n = (tid * 7919) % count
end

function request()
    if prefix == nil then
        return wrk.format("GET", path)
    end
    local p = prefix .. (first + n) .. suffix
    n = (n + 1) % count
    return wrk.format("GET", p)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
        '"err_connect": %d, "err_read": %d, "err_write": %d, ' ..
        '"err_status": %d, "err_timeout": %d, "lat_mean_us": %.1f, ' ..
        '"lat_p50_us": %d, "lat_p90_us": %d, "lat_p99_us": %d, ' ..
        '"lat_max_us": %d}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout, latency.mean,
        latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max))
end
