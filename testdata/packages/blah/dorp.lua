-- require('blah.dorp'): a nested module; called with args it counts to n.
local M = {}

function M.greet(name)
  return "hello " .. tostring(name)
end

setmetatable(M, {
  __call = function(_, args)
    local n = (args[1] and args[1].n) or 3
    local out = {}
    for i = 1, n do out[i] = i * i end
    return out
  end,
})

return function(args)
  local n = (type(args[1]) == "table" and args[1].n) or 3
  local out = {}
  for i = 1, n do out[i] = i * i end
  return { squares = out, greeting = M.greet("dorp") }
end
