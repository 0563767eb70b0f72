-- The request mix phones send, keep-alive, over USERS users (default 10000):
-- 60 % POST Ping (a small WBXML body; the pool answers at once here, so a closed-loop client
-- does not stall: what a Ping costs a proxy is its request and its answer, not the wait),
-- 20 % POST Sync with a small body, 20 % GET (Traveler's own URLs).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
require("basic")

local users = tonumber(os.getenv("USERS") or "10000")
local counter = 0
local ping_body = string.rep("P", 32)
local sync_body = string.rep("S", 160)
local headers = {["Host"] = "mail.example.com", ["Content-Type"] = "application/vnd.ms-sync.wbxml",
  ["MS-ASProtocolVersion"] = "16.1", ["User-Agent"] = "Apple-iPhone14C2/2008.251"}
local get_headers = {["Host"] = "mail.example.com"}

request = function()
  counter = counter + 1
  local u = (counter * 7919) % users
  local kind = counter % 10
  local name = string.format("user%05d", u)
  headers["Authorization"] = basic_for(name)
  get_headers["Authorization"] = headers["Authorization"]
  if kind < 6 then
    local path = string.format("/Microsoft-Server-ActiveSync?Cmd=Ping&User=user%05d&DeviceId=dev%05d&DeviceType=iPhone&hold=0ms", u, u)
    return wrk.format("POST", path, headers, ping_body)
  elseif kind < 8 then
    local path = string.format("/Microsoft-Server-ActiveSync?Cmd=Sync&User=user%05d&DeviceId=dev%05d&DeviceType=iPhone", u, u)
    return wrk.format("POST", path, headers, sync_body)
  end
  local path = string.format("/traveler?action=getStatus&User=user%05d", u)
  return wrk.format("GET", path, get_headers)
end
