package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/rdrr"
)

func newVerify() *cobra.Command {
	return &cobra.Command{
		Use:   "verify DIR",
		Short: "Rehash every shard and block of an RDRR directory; report each bad one",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			m, err := rdrr.OpenDir(dir)
			if err != nil {
				return err
			}
			update, finish := progressFunc("verifying")
			total := m.Manifest.TotalSize()
			r, err := rdrr.VerifyDir(dir, func(done int64) { update(done, total) })
			finish()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, p := range r.Problems {
				fmt.Fprintf(w, "BAD %s\n", p)
			}
			if len(r.Problems) > 0 {
				return fmt.Errorf("%s: %d problem(s) in %d shards", dir, len(r.Problems), r.Shards)
			}
			signed := "unsigned"
			if r.Signed {
				signed = "signature valid"
			}
			fmt.Fprintf(w, "ok %s: %d shards, %s verified, %s\nmodel id %s\n", dir, r.Shards, humanBytes(r.Bytes), signed, r.ID)
			return nil
		},
	}
}
