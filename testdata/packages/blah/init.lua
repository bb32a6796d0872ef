-- require('blah') loads this file.
local util = require('blah.util')

return function(args)
  return { greeting = util.greet(args[1] or "world") }
end
