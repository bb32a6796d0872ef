package harness

// JSONCase is one example of the rules by which results become JSON (README
// "How results become JSON"): Lua source and the JSON it must give, or an
// error it must fail with.
type JSONCase struct {
	Name   string
	Source string
	// Want is the exact JSON result; empty when WantErr is set.
	Want string
	// WantErr is a part of the error message the run must fail with.
	WantErr string
}

// JSONCases hold on every runtime. The harness's tests run them with the
// host's interpreters, and the VM tests run them in a guest.
var JSONCases = []JSONCase{
	{"empty table is an array", `return {}`, `[]`, ""},
	{"marked object", `return lualambda.object({})`, `{}`, ""},
	{"marked array", `return lualambda.array({1, 2})`, `[1,2]`, ""},
	{"sparse array becomes object", `return {[1] = 1, [3] = 3}`, `{"1":1,"3":3}`, ""},
	{"mixed keys", `return {a = 1, [2] = 3}`, `{"2":3,"a":1}`, ""},
	{"sorted keys", `return {b = 1, a = 2, c = 3}`, `{"a":2,"b":1,"c":3}`, ""},
	{"integers", `return {1, -2, 2^53 - 1}`, `[1,-2,9007199254740991]`, ""},
	{"integral floats", `return {4.0, 1e15, -0.0 + 3}`, `[4,1000000000000000,3]`, ""},
	{"floats", `return {0.1, 1.5, 1/3}`, `[0.1,1.5,0.3333333333333333]`, ""},
	{"large floats", `return {2^53, 2^63, 1e300}`, `[9007199254740992,9.223372036854776e+18,1e+300]`, ""},
	{"escapes", `return "a\"b\\c\n\1"`, `"a\"b\\c\n\u0001"`, ""},
	{"invalid utf-8", `return "a\255b"`, `"a` + "\uFFFD" + `b"`, ""},
	{"valid utf-8", `return "héllo ✓"`, `"héllo ✓"`, ""},
	{"null", `return {lualambda.null}`, `[null]`, ""},
	{"nan", `return 0/0`, "", "cannot encode NaN or infinity"},
	{"inf", `return {x = math.huge}`, "", "cannot encode NaN or infinity as JSON (at $.x)"},
	{"cycle", `local t = {} t.t = t return t`, "", "cycle detected (at $.t)"},
	{"depth", `local t = {} local c = t for i = 1, 200 do c.x = {} c = c.x end return t`, "", "nesting deeper than 128"},
	{"boolean key", `return {[true] = 1}`, "", "cannot use a boolean as a JSON object key"},
	{"function", `return {f = print}`, "", "cannot encode function as JSON (at $.f)"},
}

// Lua54Cases hold on Lua 5.4 only: its integers, floor division and utf8
// library.
var Lua54Cases = []JSONCase{
	{"floor division and utf8", `return {7 // 2, utf8.char(72)}`, `[3,"H"]`, ""},
	{"integer limits", `return {math.maxinteger, math.mininteger}`, `[9223372036854775807,-9223372036854775808]`, ""},
	{"integer and float", `return {math.type(3), math.type(3.0), 3.0, 7 / 2}`, `["integer","float",3,3.5]`, ""},
	{"integer keys", `return {[math.maxinteger] = 1}`, `{"9223372036854775807":1}`, ""},
}
