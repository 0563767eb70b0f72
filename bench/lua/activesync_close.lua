-- As activesync_users.lua, with a new connection for every request (Connection: close).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
require("basic")

local users = tonumber(os.getenv("USERS") or "10000")
local counter = 0

request = function()
  counter = counter + 1
  local u = (counter * 7919) % users
  local path = string.format("/Microsoft-Server-ActiveSync?Cmd=Sync&User=user%05d&DeviceId=dev%05d&DeviceType=iPhone", u, u)
  return wrk.format("POST", path, {["Host"] = "mail.example.com", ["Content-Type"] = "application/vnd.ms-sync.wbxml",
    ["MS-ASProtocolVersion"] = "16.1", ["Authorization"] = basic_for(string.format("user%05d", u)), ["Connection"] = "close"}, "0123456789abcdef")
end
