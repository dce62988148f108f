-- wrk script for the API figure: GET one capture and the list, alternating, as one account;
-- prints one JSON line at the end. Run: wrk -s bench/api_load.lua URL -- TOKEN ACCOUNT PCAP
local token, account, pcap
local n = 0

function init(args)
  token, account, pcap = args[1], args[2], args[3]
end

function request()
  n = n + 1
  local path = "/client/v4/accounts/" .. account .. "/pcaps"
  if n % 2 == 1 then
    path = path .. "/" .. pcap
  end
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f}\n',
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
