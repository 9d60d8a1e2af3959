package main

import (
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// wantsChat reports whether run, given no prompt, should open the chat:
// its input is a terminal (piped input keeps run one-shot).
func wantsChat(prompt, promptTokens string) bool {
	return prompt == "" && promptTokens == "" && term.IsTerminal(int(os.Stdin.Fd()))
}

// runChat opens the model -m names (through the swarm when run joined
// it) and chats with it on the terminal. -n bounds each answer only when
// given.
func runChat(cmd *cobra.Command, rf *runFlags, system string, so sampling, n int) error {
	ctx := cmd.Context()
	src, err := rf.open(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	o := chatOptions{system: system, sample: so, in: os.Stdin, out: cmd.OutOrStdout()}
	if cmd.Flags().Changed("n") {
		o.maxTokens = n
	}
	return terminalChat(ctx, src, rf, o)
}
