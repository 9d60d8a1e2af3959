package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/rdrr/gguf"
)

func newInspect() *cobra.Command {
	var asJSON, tensors bool
	cmd := &cobra.Command{
		Use:   "inspect PATH",
		Short: "Describe a GGUF file or an RDRR directory: architecture, config, tensors, shards, model id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := rdrr.Sniff(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if kind != rdrr.KindGGUF {
				m, err := rdrr.OpenDir(args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(w, map[string]any{"id": m.ID, "config": m.Manifest.Config, "shards": len(m.Manifest.Shards),
						"tensors": len(m.Manifest.Tensors), "bytes": m.Manifest.TotalSize(), "signed": m.Signer != nil})
				}
				inspectRDRR(w, m, tensors)
				return nil
			}
			f, err := gguf.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			cfg, cerr := convert.ConfigFromGGUF(f)
			if asJSON {
				out := map[string]any{"gguf_version": f.Version, "tensors": len(f.Tensors), "metadata_keys": len(f.KV), "bytes": f.FileSize}
				if cerr == nil {
					out["config"] = cfg
				} else {
					out["config_error"] = cerr.Error()
				}
				return printJSON(w, out)
			}
			inspectGGUF(w, f, cfg, cerr, tensors)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON summary")
	cmd.Flags().BoolVar(&tensors, "tensors", false, "list every tensor")
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func inspectRDRR(w io.Writer, m *rdrr.Model, listTensors bool) {
	man := m.Manifest
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model id\t%s\n", m.ID)
	fmt.Fprintf(tw, "format\t%s\n", man.Format)
	if m.Signer != nil {
		fmt.Fprintf(tw, "publisher\ted25519:%s (signature valid)\n", hex.EncodeToString(m.Signer))
	} else {
		fmt.Fprintf(tw, "publisher\tunsigned\n")
	}
	if m.Info.Name != "" {
		fmt.Fprintf(tw, "name\t%s\n", m.Info.Name)
	}
	if src := m.Info.Source; src != nil {
		fmt.Fprintf(tw, "source\t%s (%s)\n", src.File, src.Format)
	}
	printConfig(tw, &man.Config)
	printTokenizer(tw, man.Tokenizer)
	var dts []string
	for _, c := range man.DTypeCounts() {
		dts = append(dts, fmt.Sprintf("%s×%d", c.DType, c.Count))
	}
	fmt.Fprintf(tw, "tensors\t%d (%s)\n", len(man.Tensors), strings.Join(dts, ", "))
	fmt.Fprintf(tw, "size\t%s in %d shards\n", humanBytes(man.TotalSize()), len(man.Shards))
	if len(man.Experts) > 0 {
		fmt.Fprintf(tw, "experts\t%d (layer, expert) groups in shards of their own\n", len(man.Experts))
	}
	tw.Flush()
	fmt.Fprintln(w, "\nshards:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\thash\tsize\tblocks\tcontents")
	for i, s := range man.Shards {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d × %s\t%s\n", i, s.Hash, humanBytes(s.Size), len(s.Blocks), humanBytes(s.BlockSize), shardContents(man, i))
	}
	tw.Flush()
	if listTensors {
		fmt.Fprintln(w, "\ntensors:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range man.Tensors {
			where := fmt.Sprintf("shard %d @ %d", t.Shard, t.Offset)
			if len(t.Spans) > 0 {
				where = fmt.Sprintf("%d spans", len(t.Spans))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%v\t%s\t%s\n", t.Name, t.DType, t.Shape, humanBytes(t.Size), where)
		}
		tw.Flush()
	}
}

// shardContents summarises what a shard holds: an expert, or dense tensors.
func shardContents(m *rdrr.Manifest, shard int) string {
	for _, e := range m.Experts {
		for _, s := range e.Shards {
			if s == shard {
				return fmt.Sprintf("expert %d of layer %d", e.Expert, e.Layer)
			}
		}
	}
	n := 0
	for _, t := range m.Tensors {
		for _, p := range t.Pieces() {
			if p.Shard == shard {
				n++
				break
			}
		}
	}
	return fmt.Sprintf("%d tensors", n)
}

func printConfig(tw io.Writer, c *rdrr.Config) {
	fmt.Fprintf(tw, "architecture\t%s\n", c.Architecture)
	fmt.Fprintf(tw, "layers\t%d\n", c.Layers)
	fmt.Fprintf(tw, "hidden\t%d\n", c.HiddenSize)
	fmt.Fprintf(tw, "heads\t%d (KV %d, head dim %d)\n", c.Heads, c.KVHeads, c.HeadDim)
	fmt.Fprintf(tw, "ffn\t%d (%s)\n", c.FFN, c.Activation)
	fmt.Fprintf(tw, "vocab\t%d\n", c.VocabSize)
	fmt.Fprintf(tw, "context\t%d\n", c.ContextLength)
	rope := fmt.Sprintf("theta %g, %d dims, %s", c.Rope.Theta, c.Rope.Dim, c.Rope.Style)
	if s := c.Rope.Scaling; s != nil {
		rope += fmt.Sprintf(", %s scaling ×%g", s.Type, s.Factor)
	}
	if c.RopeLocal != nil {
		rope += fmt.Sprintf("; local layers theta %g", c.RopeLocal.Theta)
	}
	fmt.Fprintf(tw, "rope\t%s\n", rope)
	norm := fmt.Sprintf("RMS, eps %g", c.NormEps)
	if c.NormAddOne {
		norm += ", (1 + w)"
	}
	fmt.Fprintf(tw, "norm\t%s\n", norm)
	if c.SlidingWindow > 0 {
		types := "every layer"
		if len(c.LayerTypes) > 0 {
			types = strings.Join(c.LayerTypes, " ")
		}
		fmt.Fprintf(tw, "sliding window\t%d (%s)\n", c.SlidingWindow, types)
	}
	if c.Experts > 0 {
		fmt.Fprintf(tw, "experts\t%d, %d used per token, ffn %d, gating %s\n", c.Experts, c.ExpertsUsed, c.ExpertFFN, c.ExpertGating)
	}
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{c.TiedEmbeddings, "tied embeddings"}, {c.QKNorm, "q/k norm"}, {c.AttnSinks, "attention sinks"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	if len(flags) > 0 {
		fmt.Fprintf(tw, "features\t%s\n", strings.Join(flags, ", "))
	}
}

func printTokenizer(tw io.Writer, t *rdrr.Tokenizer) {
	if t == nil {
		fmt.Fprintf(tw, "tokenizer\tnone (use --prompt-tokens)\n")
		return
	}
	s := fmt.Sprintf("%s, %d tokens, bos %d, eos %d", t.Model, len(t.Tokens), t.BOS, t.EOS)
	if t.ChatTemplate != "" {
		s += ", chat template"
	}
	fmt.Fprintf(tw, "tokenizer\t%s\n", s)
}

func inspectGGUF(w io.Writer, f *gguf.File, cfg rdrr.Config, cerr error, listTensors bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "file\t%s (GGUF v%d, %s)\n", f.Path, f.Version, humanBytes(f.FileSize))
	fmt.Fprintf(tw, "metadata\t%d keys\n", len(f.KV))
	if name, ok := f.String("general.name"); ok {
		fmt.Fprintf(tw, "name\t%s\n", name)
	}
	if cerr != nil {
		fmt.Fprintf(tw, "architecture\t%s (cannot be run: %v)\n", f.Architecture(), cerr)
	} else {
		printConfig(tw, &cfg)
	}
	tok, err := convert.TokenizerFromGGUF(f)
	if err != nil {
		fmt.Fprintf(tw, "tokenizer\tbroken: %v\n", err)
	} else {
		printTokenizer(tw, tok)
	}
	counts := map[string]int{}
	var total uint64
	for _, t := range f.Tensors {
		name := t.DType.String()
		if !t.DType.Valid() {
			name = fmt.Sprintf("ggml type %d (unsupported)", t.GGML)
		}
		counts[name]++
		total += t.Size
	}
	var dts []string
	for k, n := range counts {
		dts = append(dts, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(dts)
	fmt.Fprintf(tw, "tensors\t%d (%s), %s of data\n", len(f.Tensors), strings.Join(dts, ", "), humanBytes(int64(total)))
	tw.Flush()
	if listTensors {
		fmt.Fprintln(w, "\ntensors:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range f.Tensors {
			fmt.Fprintf(tw, "  %s\t%s\t%v\t%s\n", t.Name, t.DType, t.Dims, humanBytes(int64(t.Size)))
		}
		tw.Flush()
	}
}
