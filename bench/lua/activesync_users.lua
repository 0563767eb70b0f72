-- ActiveSync-like keep-alive requests spread over USERS users (default 10000).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
require("basic")

local users = tonumber(os.getenv("USERS") or "10000")
local counter = 0
local cmds = {"Sync", "Ping", "FolderSync", "Sync", "Sync", "GetItemEstimate"}

request = function()
  counter = counter + 1
  local u = (counter * 7919) % users
  local cmd = cmds[(counter % #cmds) + 1]
  if cmd == "Ping" then cmd = "Sync" end  -- a held Ping would stall a closed-loop client
  local path = string.format("/Microsoft-Server-ActiveSync?Cmd=%s&User=user%05d&DeviceId=dev%05d&DeviceType=iPhone", cmd, u, u)
  return wrk.format("POST", path, {["Host"] = "mail.example.com", ["Content-Type"] = "application/vnd.ms-sync.wbxml",
    ["MS-ASProtocolVersion"] = "16.1", ["Authorization"] = basic_for(string.format("user%05d", u))}, "0123456789abcdef")
end
