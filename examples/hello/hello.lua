-- The quick start's package: `lualambda invoke --local --pkg examples/hello
-- --arg Ada` runs it. A module that returns a function is called with the
-- run's arguments, a Lua array; what it returns is the result, as JSON.
return function(args)
  local name = args[1] or "world"
  print("greeting " .. tostring(name)) -- printed output goes to stderr
  return { greeting = "hello " .. tostring(name) }
end
