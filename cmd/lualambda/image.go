package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lualambda/caddy-lualambda/guest/image"
)

func newImageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build or show the guest image (kernel + initramfs)",
	}
	var opts image.Options
	build := &cobra.Command{
		Use:   "build",
		Short: "Build the guest image from Debian packages, unless the cache has it",
		Long: `Build the guest image: the Debian cloud kernel and an initramfs with the
guest agent as /init, the virtio modules, LuaJIT with lua-cjson and the Lua
harness. Packages are fetched with apt-get download. The same inputs give the
same bytes; images are cached by content hash in the cache directory
($LUALAMBDA_CACHE, else the user's cache directory + /lualambda).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Progress = cmd.ErrOrStderr()
			im, err := image.Build(cmd.Context(), opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), im.Dir)
			return nil
		},
	}
	build.Flags().StringVar(&opts.CacheDir, "cache", "", "cache directory")
	build.Flags().StringVar(&opts.SourceDir, "source", "", "this project's source directory, to build the agent (default: found from the working directory)")
	build.Flags().StringVar(&opts.AgentBinary, "agent", "", "a prebuilt static agent binary to use")
	var cacheDir string
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the current image's manifest",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			im, err := image.Current(cacheDir)
			if err != nil {
				return err
			}
			out := struct {
				Dir string `json:"dir"`
				*image.Image
			}{im.Dir, im}
			b, _ := json.MarshalIndent(out, "", "  ")
			fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return nil
		},
	}
	show.Flags().StringVar(&cacheDir, "cache", "", "cache directory")
	cmd.AddCommand(build, show)
	return cmd
}
