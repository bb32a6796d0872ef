-- The lualambda harness: runs one job of user Lua code inside the guest.
--
-- The agent starts it before any job exists, as an unprivileged user. It
-- loads what it needs, then reads one JSON job (one line) from stdin, runs
-- it, and writes one JSON result to fd 3, closing stdout, stderr and fd 3 so
-- that the agent can answer before this process has exited. stdout and
-- stderr belong to the user's code.

local cjson = require("cjson")
local cjson_safe = require("cjson.safe")

local type, pairs, ipairs, tostring, select = type, pairs, ipairs, tostring, select
local format, byte, char, concat, sort = string.format, string.byte, string.char, table.concat, table.sort
local floor, huge = math.floor, math.huge

-- The harness runs on LuaJIT (Lua 5.1) and on Lua 5.4. On 5.4, numbers are
-- integers or floats (math.type), and loadstring/unpack are load and
-- table.unpack.
local LUA54 = _VERSION == "Lua 5.4"
local math_type, tointeger = math.type, math.tointeger
local loadstring = loadstring or load
local unpack = unpack or table.unpack

-- The result channel is fd 3. On LuaJIT it is written and closed through
-- the FFI, with stdout and stderr closed too, so the agent sees the result
-- complete the moment it is written. Plain Lua 5.4 cannot close a
-- descriptor: there the result goes through /proc/self/fd/3, opened now
-- (before user code runs), and the descriptors close when the process
-- exits, right after the result is written.
local RESULT_FD = 3
local fd_write, fd_close
if type(jit) == "table" then
  local ffi = require("ffi")
  ffi.cdef([[
  long write(int fd, const void *buf, unsigned long count);
  int close(int fd);
  ]])
  local C = ffi.C
  fd_write = function(fd, s)
    local p, left = ffi.cast("const char *", s), #s
    while left > 0 do
      local n = tonumber(C.write(fd, p, left))
      if n <= 0 then return false end
      p, left = p + n, left - n
    end
    return true
  end
  fd_close = function(fd) C.close(fd) end
else
  local result_file = io.open("/proc/self/fd/" .. RESULT_FD, "w")
  fd_write = function(_, s)
    if not result_file then return false end
    return result_file:write(s) ~= nil and result_file:flush() ~= nil
  end
  fd_close = function(fd)
    if fd == RESULT_FD and result_file then
      result_file:close()
      result_file = nil
    end
  end
end

---------------------------------------------------------------------------
-- JSON null and shape marks, exposed to user code as lualambda.*
---------------------------------------------------------------------------

local null = cjson.null
local shape_key = {} -- private key of the shape metatables
local array_mt = { [shape_key] = "array", __name = "lualambda.array" }
local object_mt = { [shape_key] = "object", __name = "lualambda.object" }

local function mark(t, mt)
  if type(t) ~= "table" then
    error("lualambda.array/object expects a table, got " .. type(t), 3)
  end
  return setmetatable(t, mt)
end

local api = {
  null = null,
  array = function(t) return mark(t or {}, array_mt) end,
  object = function(t) return mark(t or {}, object_mt) end,
}

---------------------------------------------------------------------------
-- JSON encoding with predictable rules (see JSON.md)
---------------------------------------------------------------------------

local MAX_DEPTH = 128

local escapes = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

-- utf8_clean replaces every byte that is not part of a valid UTF-8
-- sequence with U+FFFD.
local function utf8_clean(s)
  if not s:find("[\128-\255]") then return s end
  local out, n, i, len = {}, 0, 1, #s
  while i <= len do
    local c = byte(s, i)
    local size = 0
    if c < 0x80 then size = 1
    elseif c >= 0xC2 and c <= 0xDF then size = 2
    elseif c >= 0xE0 and c <= 0xEF then size = 3
    elseif c >= 0xF0 and c <= 0xF4 then size = 4
    end
    local ok = size > 0 and i + size - 1 <= len
    if ok and size > 1 then
      local c2 = byte(s, i + 1)
      if c == 0xE0 and c2 < 0xA0 then ok = false
      elseif c == 0xED and c2 > 0x9F then ok = false
      elseif c == 0xF0 and c2 < 0x90 then ok = false
      elseif c == 0xF4 and c2 > 0x8F then ok = false
      end
      for k = i + 1, i + size - 1 do
        local b = byte(s, k)
        if b < 0x80 or b > 0xBF then ok = false end
      end
    end
    n = n + 1
    if ok then
      out[n] = s:sub(i, i + size - 1)
      i = i + size
    else
      out[n] = "\239\191\189"
      i = i + 1
    end
  end
  return concat(out)
end

local function encode_string(s)
  s = utf8_clean(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or format("\\u%04x", byte(c))
  end) .. '"'
end

local function number_text(n, path)
  if math_type and math_type(n) == "integer" then
    return format("%d", n)
  end
  if n ~= n or n == huge or n == -huge then
    error({ json = "cannot encode NaN or infinity as JSON (at " .. path .. ")" })
  end
  if n == floor(n) and n > -2^53 and n < 2^53 then
    return format("%d", n)
  end
  for _, f in ipairs({ "%.14g", "%.15g", "%.16g" }) do
    local s = format(f, n)
    if tonumber(s) == n then return s end
  end
  return format("%.17g", n)
end

-- table_kind says how a table encodes: "array" with its length, or "object".
local function table_kind(t)
  local mt = getmetatable(t)
  local mark_ = type(mt) == "table" and rawget(mt, shape_key) or nil
  local count, maxn, other = 0, 0, false
  for k in pairs(t) do
    count = count + 1
    if type(k) == "number" and k >= 1 and k == floor(k) then
      if k > maxn then maxn = k end
    else
      other = true
    end
  end
  if mark_ == "object" then return "object" end
  if mark_ == "array" then
    if other then error({ json = "a table marked array has keys other than 1..n" }) end
    return "array", maxn
  end
  if count == 0 then return "array", 0 end
  if not other and maxn == count then return "array", maxn end
  return "object"
end

local function encoder(limit)
  local buf, n, size, seen = {}, 0, 0, {}

  local function put(s)
    n = n + 1
    buf[n] = s
    size = size + #s
    if limit and limit > 0 and size > limit then
      error({ json = "the result is larger than the limit of " .. number_text(limit, "$") .. " bytes", too_large = true })
    end
  end

  local value
  function value(v, path, depth)
    local t = type(v)
    if v == nil or v == null then
      put("null")
    elseif t == "boolean" then
      put(v and "true" or "false")
    elseif t == "number" then
      put(number_text(v, path))
    elseif t == "string" then
      put(encode_string(v))
    elseif t == "table" then
      if depth >= MAX_DEPTH then
        error({ json = "nesting deeper than " .. MAX_DEPTH .. " (at " .. path .. ")" })
      end
      if seen[v] then
        error({ json = "cycle detected (at " .. path .. ")" })
      end
      seen[v] = true
      local kind, len = table_kind(v)
      if kind == "array" then
        put("[")
        for i = 1, len do
          if i > 1 then put(",") end
          value(v[i], path .. "[" .. (i - 1) .. "]", depth + 1)
        end
        put("]")
      else
        local keys, texts = {}, {}
        for k in pairs(v) do
          local kt = type(k)
          local text
          if kt == "string" then
            text = k
          elseif kt == "number" then
            text = number_text(k, path)
          else
            error({ json = "cannot use a " .. kt .. " as a JSON object key (at " .. path .. ")" })
          end
          keys[#keys + 1] = k
          texts[k] = text
        end
        sort(keys, function(a, b) return texts[a] < texts[b] end)
        put("{")
        for i, k in ipairs(keys) do
          if i > 1 then put(",") end
          put(encode_string(texts[k]))
          put(":")
          value(v[k], path .. "." .. texts[k], depth + 1)
        end
        put("}")
      end
      seen[v] = nil
    else
      error({ json = "cannot encode " .. t .. " as JSON (at " .. path .. ")" })
    end
  end

  return function(v)
    value(v, "$", 0)
    return concat(buf)
  end
end

local function encode(v, limit)
  return encoder(limit)(v)
end

---------------------------------------------------------------------------
-- Running the job
---------------------------------------------------------------------------

-- write_result closes the user's output streams, then writes and closes
-- the result: the agent answers as soon as all three are closed, without
-- waiting for this process to exit.
local function write_result(doc)
  io.stdout:flush()
  io.stderr:flush()
  fd_close(1)
  fd_close(2)
  fd_write(RESULT_FD, doc)
  fd_close(RESULT_FD)
end

local function failure(reason, message, traceback)
  return '{"ok":false,"reason":' .. encode_string(reason) ..
    ',"error":' .. encode_string(message or "") ..
    ',"traceback":' .. encode_string(traceback or "") .. '}'
end

local function is_memory(msg)
  return type(msg) == "string" and msg:find("not enough memory", 1, true) ~= nil
end

local function message_of(err)
  if type(err) == "string" then return err end
  if type(err) == "table" then
    local ok, s = pcall(encode, err, 64 * 1024)
    if ok then return s end
  end
  return tostring(err)
end

-- trim_traceback drops the harness's own frames from a traceback.
local function trim_traceback(tb)
  local lines = {}
  for line in tostring(tb):gmatch("[^\n]+") do
    if line:find("harness.lua", 1, true) or line:find("in function 'xpcall'", 1, true) or line:find("[C]: at 0x", 1, true) then
      break
    end
    lines[#lines + 1] = line
  end
  return concat(lines, "\n")
end

-- integers turns, in place, every integral number of a decoded JSON value
-- below 2^53 into a Lua 5.4 integer (lua-cjson decodes all numbers as
-- floats), so that 7 arrives as 7, not 7.0. It returns the value.
local function integers(v)
  if type(v) == "number" then
    if v == floor(v) and v > -2^53 and v < 2^53 then return tointeger(v) or v end
  elseif type(v) == "table" then
    for k, x in pairs(v) do
      v[k] = integers(x)
    end
  end
  return v
end

-- decode_args returns the job's args as a Lua array. JSON null is
-- lualambda.null (so it keeps its place); an empty JSON object or array is
-- an empty table, which encodes back as []. On Lua 5.4, integral numbers
-- are integers.
local function decode_args(args)
  if type(args) ~= "table" then return {} end
  if LUA54 then return integers(args) end
  return args
end

-- Modules come from the job's packages, below pkgdir: a.b is a/b.lua or
-- a/b/init.lua there. A package named a whose top holds a.lua and no
-- init.lua is the module a too: the guest puts a/a.lua there also as a.lua
-- (see guest/unpack). Messages name what was looked for in the user's
-- terms: packages and the files in them, not the guest's paths.
local pkgdir = "/job/pkg"

-- find_module returns the file of module name, or nil.
local function find_module(name)
  local rel = name:gsub("%.", "/")
  for _, f in ipairs({ rel .. ".lua", rel .. "/init.lua" }) do
    local path = pkgdir .. "/" .. f
    local h = io.open(path, "rb")
    if h then
      h:close()
      return path
    end
  end
  return nil
end

-- not_found says where module name was looked for.
local function not_found(name)
  local top, rest = name:match("^([^.]+)%.(.+)$")
  if not top then
    return format("no package named %s with init.lua or %s.lua at its top", name, name)
  end
  local h = io.open(pkgdir .. "/" .. top, "rb")
  if not h then
    return format("no package named %s", top)
  end
  h:close()
  rest = rest:gsub("%.", "/")
  return format("package %s has no %s.lua or %s/init.lua", top, rest, rest)
end

-- Searchers return their "not found" text; LuaJIT (5.1) wants it to start
-- with "\n\t", Lua 5.4 adds that itself.
local searcher_prefix = _VERSION == "Lua 5.1" and "\n\t" or ""

local function preload_searcher(name)
  local loader = package.preload[name]
  if loader then return loader, ":preload:" end
  return nil
end

local function package_searcher(name)
  local path = find_module(name)
  if not path then
    return searcher_prefix .. not_found(name)
  end
  local chunk, err = loadfile(path)
  if not chunk then
    error(format("error loading module '%s' from file '%s':\n\t%s", name, path, err), 0)
  end
  return chunk, path
end

-- use_package_searchers makes require look in the packages only (the job
-- has no C modules and no other path), in the terms above.
local function use_package_searchers(dir)
  pkgdir = dir
  package.path = pkgdir .. "/?.lua;" .. pkgdir .. "/?/init.lua"
  package.cpath = ""
  local searchers = package.searchers or package.loaders
  for i = #searchers, 1, -1 do searchers[i] = nil end
  searchers[1], searchers[2] = preload_searcher, package_searcher
end

-- compile accepts a bare expression as well as a chunk. The expression is
-- parenthesised so that a call in it is no tail call and keeps its frame
-- (error positions and tracebacks then point at the user's code).
local function compile(source)
  local chunk = loadstring("return (" .. source .. "\n)", "=input")
  if chunk then return chunk end
  return loadstring(source, "=input")
end

local function run(job)
  local args = decode_args(job.args)
  local fn
  if type(job.source) == "string" and job.source ~= "" then
    local chunk, err = compile(job.source)
    if not chunk then
      return nil, { message = err, traceback = "" }
    end
    fn = function()
      local r = chunk(unpack(args, 1, #args))
      if type(r) == "function" then return r(args) end
      return r
    end
  elseif type(job.require) == "string" and job.require ~= "" then
    -- A module that is not there is the job's error, not a call of the
    -- harness's: no harness frame, no traceback.
    local name = job.require
    if package.loaded[name] == nil and package.preload[name] == nil and not find_module(name) then
      return nil, { message = format("module '%s' not found: %s", name, not_found(name)), traceback = "" }
    end
    fn = function()
      local m = require(job.require)
      if type(m) == "function" then return m(args) end
      return m
    end
  else
    return nil, { message = "the job has neither source nor require", traceback = "" }
  end
  local captured
  local ok, value = xpcall(fn, function(err)
    captured = { message = message_of(err), traceback = trim_traceback(debug.traceback("", 2)) }
    return err
  end)
  if not ok then
    -- Lua does not call the handler for memory errors.
    collectgarbage()
    return nil, captured or { message = message_of(value), traceback = "" }
  end
  return value, nil
end

-- warm runs the paths a job takes (decoding, compiling, calling, encoding)
-- on throwaway values, leaving nothing user code can see. Under TCG this
-- moves code translation off the request path.
local function warm()
  local job = cjson_safe.decode('{"source":"return function(a) return {n = #a, s = a[1] .. \\"x\\"} end","args":["w",1,{"k":[1,2]}]}')
  local chunk = job and compile(job.source)
  if chunk then
    local ok, f = pcall(chunk)
    if ok and type(f) == "function" then
      local ok2, v = pcall(f, job.args)
      if ok2 then pcall(encode, { v, 1.5, "é", api.object({}), { 1, 2, 3 } }, 4096) end
    end
  end
  pcall(failure, "error", "warm", "")
  collectgarbage()
end

local function main()
  warm()
  -- What the code prints goes out a line at a time, as on a terminal, so
  -- that a streamed run shows each line when it is printed rather than
  -- when a buffer fills.
  io.stdout:setvbuf("line")

  -- The job is one line of JSON.
  local input = io.stdin:read("*l")
  io.stdin:close()
  local job = cjson_safe.decode(input or "")
  if type(job) ~= "table" then
    write_result(failure("error", "the harness got a malformed job", ""))
    return
  end
  use_package_searchers(type(job.pkgdir) == "string" and job.pkgdir or "/job/pkg")
  if type(job.seed) == "number" then
    -- Lua 5.4 wants an integer seed; the decoded seed is a float.
    math.randomseed(LUA54 and tointeger(job.seed % 2^53) or job.seed)
  end
  _G.lualambda = api

  local value, err = run(job)
  if err then
    local reason = is_memory(err.message) and "memory" or "error"
    write_result(failure(reason, err.message, err.traceback))
    return
  end
  local ok, encoded = pcall(encode, value, tonumber(job.max_result_bytes))
  if not ok then
    local msg = type(encoded) == "table" and encoded.json or tostring(encoded)
    local reason = is_memory(msg) and "memory" or "error"
    write_result(failure(reason, "the result cannot be returned: " .. msg, ""))
    return
  end
  write_result('{"ok":true,"result":' .. encoded .. '}')
end

local ok, err = pcall(main)
if not ok then
  pcall(write_result, failure(is_memory(tostring(err)) and "memory" or "error", tostring(err), ""))
end
os.exit(0, false)
