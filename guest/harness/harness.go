package harness

import _ "embed"

//go:embed harness.lua
var Source []byte

const InstallPath = "/lib/lualambda/harness.lua"
