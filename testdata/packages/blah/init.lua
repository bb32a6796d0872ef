-- require('blah') returns this module: a function of the args.
local dorp = require('blah.dorp')
return function(args)
  return { greeting = dorp.greet(args[1] or "world") }
end
