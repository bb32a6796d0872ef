// Command lualambda runs Lua in fresh QEMU microVMs: locally with no server,
// or against a caddy-lualambda server, paying with x402 when it asks.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code and a message for the user.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageErrorf is bad input from the user: exit code 2.
func usageErrorf(format string, a ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, a...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRootCommand()
	err := root.ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "lualambda:", ee.msg)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "lualambda:", err)
	os.Exit(1)
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "lualambda",
		Short: "Run Lua in fresh, hardware-isolated microVMs",
		Long: `lualambda runs Lua code in a QEMU microVM that is used once and destroyed.

Run locally with no server (invoke --local), or against a caddy-lualambda
server (invoke --server URL), which may ask for payment with x402.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErrorf("%v", err) })
	root.AddCommand(newInvokeCommand(), newStatusCommand(), newOutputCommand(), newProfilesCommand(), newAttachCommand(), newImageCommand(), newDevnetCommand(), newBenchCommand(), newWalletCommand(), newPayCommand(), newMCPCommand(), newServeCommand(), newVersionCommand())
	return root
}
