local cjson = require("cjson")
local job = cjson.decode(io.read("*a"))
local f = io.open("/proc/self/fd/3", "w")
local chunk = load("return " .. job.source) or load(job.source)
local ok, v = pcall(chunk)
print("printed from lua")
if ok then f:write(cjson.encode({ok=true, result=v})) else f:write(cjson.encode({ok=false, reason="error", error=tostring(v)})) end
f:close()
