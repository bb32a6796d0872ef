package vmpool_test

import (
	"bytes"
	"fmt"
	"os"
	"testing"
)

// TestQEMUEnvironment: QEMU inherits none of the host's environment, where
// Caddy keeps secrets (a fee payer's words in {env.*}): a guest that took
// over its QEMU could read them there.
func TestQEMUEnvironment(t *testing.T) {
	const secret = "LUALAMBDA_TEST_SECRET=abandon ability able"
	t.Setenv("LUALAMBDA_TEST_SECRET", "abandon ability able")
	vm := clone(t)
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", vm.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	vars := bytes.Split(bytes.TrimSuffix(env, []byte{0}), []byte{0})
	for _, v := range vars {
		if string(v) == secret {
			t.Fatalf("QEMU's environment holds the host's %s", bytes.SplitN(v, []byte("="), 2)[0])
		}
	}
	if len(vars) > 4 {
		t.Errorf("QEMU's environment has %d variables, want only the allocator's: %q", len(vars), vars)
	}
}
