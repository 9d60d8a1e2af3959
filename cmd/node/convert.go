package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

func newConvert() *cobra.Command {
	var (
		out       string
		quantName string
		signKey   string
		shardSize string
		blockSize string
	)
	cmd := &cobra.Command{
		Use:   "convert IN -o OUTDIR",
		Short: "Convert a GGUF file or an HF safetensors directory into an RDRR directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("convert: -o OUTDIR is required")
			}
			opts := convert.Options{}
			var err error
			if opts.Writer.ShardSize, err = parseSize(shardSize); err != nil {
				return fmt.Errorf("--shard-size: %w", err)
			}
			if opts.Writer.BlockSize, err = parseSize(blockSize); err != nil {
				return fmt.Errorf("--block-size: %w", err)
			}
			if quantName != "" {
				if opts.Quant, err = quant.Parse(quantName); err != nil {
					return fmt.Errorf("--quant: %w", err)
				}
				if err := convert.CheckQuantTarget(opts.Quant); err != nil {
					return fmt.Errorf("--quant: %w", err)
				}
			}
			if signKey != "" {
				if opts.SignKey, err = rdrr.LoadSigningKey(signKey, true); err != nil {
					return fmt.Errorf("--sign: %w", err)
				}
			}
			update, finish := progressFunc("converting")
			opts.Progress = update
			id, err := convert.ToRDRR(cmd.Context(), args[0], out, opts)
			finish()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "converted %s → %s\nmodel id %s\n", args[0], out, id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "out", "o", "", "output RDRR directory (must not exist or be empty)")
	f.StringVar(&quantName, "quant", "", "requantize weight matrices: f16, q8_0 or q4_k")
	f.StringVar(&signKey, "sign", "", "sign the manifest with this ed25519 PEM key (created with mode 0600 if missing)")
	f.StringVar(&shardSize, "shard-size", "64MiB", "shard size")
	f.StringVar(&blockSize, "block-size", "1MiB", "verification block size (a power of two, 1KiB to 1MiB)")
	return cmd
}
