// Command doppler is the DOPPLER node: it converts, inspects and verifies
// RDRR model packages (and, as the project grows, runs and serves them).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3").
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			return "dev-" + rev
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
	}
	return "dev"
}

func main() {
	// SIGTERM (service managers, docker stop, kill) cancels like Ctrl-C, so
	// seed/node/pull close their stores cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "doppler:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	var (
		verbose   bool
		logFormat string
	)
	root := &cobra.Command{
		Use:           "doppler",
		Short:         "A peer-to-peer LLM node: WebGPU inference, RDRR model packages, a swarm",
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			o := &slog.HandlerOptions{Level: slog.LevelInfo}
			if verbose {
				o.Level = slog.LevelDebug
			}
			switch logFormat {
			case "text":
				slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, o)))
			case "json":
				slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, o)))
			default:
				return fmt.Errorf("--log-format %q: want text or json", logFormat)
			}
			return nil
		},
	}
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log debug detail to stderr")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "log format on stderr: text or json (one object per line)")
	root.AddCommand(newConvert(), newInspect(), newVerify(), newRun(), benchWithSwarm(), newTokenize(),
		newSeed(), newPull(), newShare(), newNodeCmd(), newList(), newRm(), newServe())
	return root
}
