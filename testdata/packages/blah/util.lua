-- A helper module other modules of the package require.
local M = {}

function M.greet(name)
  return "hello " .. tostring(name)
end

function M.squares(n)
  local out = {}
  for i = 1, n do out[i] = i * i end
  return out
end

return M
