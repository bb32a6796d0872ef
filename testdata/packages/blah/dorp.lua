-- require('blah.dorp'): a nested module that returns a function of the args.
local util = require('blah.util')

return function(args)
  local n = (type(args[1]) == "table" and args[1].n) or 3
  return { squares = util.squares(n), greeting = util.greet("dorp") }
end
