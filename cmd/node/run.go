package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/doppler-llm/doppler/engine"
	"github.com/doppler-llm/doppler/engine/tokenizer"
	"github.com/doppler-llm/doppler/kernels"
	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm"
)

// runFlags are the model and sampling flags shared by run and bench.
type runFlags struct {
	model   string
	adapter string
	ctxLen  int
	kvF32   bool
	batch   int
	store   string // for -m MODEL_ID

	expertCache int
	expertVRAM  string

	sw *runSwarm // run's swarm flags (nil for bench)
}

func (f *runFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.model, "model", "m", "", modelFlagHelp)
	fl.StringVar(&f.adapter, "adapter", "", "GPU adapter to use (a substring of its name); default: the fastest found")
	fl.IntVarP(&f.ctxLen, "ctx", "c", 0, "context (KV cache) length in tokens; default min(model's, 4096)")
	fl.BoolVar(&f.kvF32, "kv-f32", false, "keep the KV cache in f32 instead of f16")
	fl.IntVar(&f.batch, "batch", 256, "prompt tokens per prefill pass")
	fl.IntVar(&f.expertCache, "expert-cache", 0, "MoE: keep at most N experts of each layer on the GPU, paging the rest in (0 = all)")
	fl.StringVar(&f.expertVRAM, "expert-vram", "", "MoE: bound the GPU memory of resident experts, e.g. 512MiB or 2GiB")
	fl.StringVar(&f.store, "store", "", "with -m MODEL_ID: the shard store holding the model ("+storeFlagHelp+")")
}

// loaded is an opened model on the GPU.
type loaded struct {
	dev   *kernels.Device
	rm    *rdrr.Model
	model *engine.Model
	tok   *tokenizer.Tokenizer // nil when the model has no tokenizer
	dir   string
	done  func() // closes the model's store, when it came from one

	node *swarm.Node  // the swarm node, when run joined one
	id   rdrr.ModelID // the model's ID, when it came from a store
}

func (l *loaded) Close() {
	l.dev.Close()
	if l.done != nil {
		l.done()
	}
}

func (f *runFlags) load(ctx context.Context) (l *loaded, err error) {
	var rm *rdrr.Model
	var node *swarm.Node
	dir, done := f.model, func() {}
	if looksLikeModelID(f.model) && f.sw != nil && f.sw.joined() {
		// Shards missing from the store are fetched from peers, verified.
		if rm, node, done, err = f.sw.open(ctx, f.store, f.model); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				done()
			}
		}()
	} else if looksLikeModelID(f.model) {
		if rm, done, err = openStoreModel(f.store, f.model); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				done()
			}
		}()
	} else {
		if dir, err = resolveModel(ctx, f.model); err != nil {
			return nil, err
		}
		if rm, err = rdrr.OpenDir(dir); err != nil {
			return nil, err
		}
	}
	var tok *tokenizer.Tokenizer
	if rm.Manifest.Tokenizer != nil {
		if tok, err = tokenizer.New(rm.Manifest.Tokenizer); err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
	}
	dev, err := kernels.Open(kernels.Options{Adapter: f.adapter, Logger: slog.Default()})
	if err != nil {
		return nil, err
	}
	var vram int64
	if f.expertVRAM != "" {
		if vram, err = parseSize(f.expertVRAM); err != nil || vram <= 0 {
			dev.Close()
			return nil, fmt.Errorf("--expert-vram %q: want a size such as 512MiB or 2GiB", f.expertVRAM)
		}
	}
	eo := engine.Options{Context: f.ctxLen, KVF32: f.kvF32, Batch: f.batch,
		ExpertCache: f.expertCache, ExpertVRAM: vram, Logger: slog.Default()}
	if node != nil && len(rm.Manifest.Experts) > 0 && (f.expertCache > 0 || vram > 0) {
		// Joined and paging experts: record usage for gossip and read
		// ahead the clusters gatekeepers publish.
		if tr, err := node.Experts(rm.ID); err != nil {
			slog.Warn("expert usage gossip off", "err", err)
		} else {
			tr.Hook(&eo)
		}
	}
	m, err := engine.Load(ctx, dev, rm, eo)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	l = &loaded{dev: dev, rm: rm, model: m, tok: tok, dir: dir, done: done, node: node}
	if node != nil {
		l.id = rm.ID
	}
	return l, nil
}

func newRun() *cobra.Command {
	var (
		rf           runFlags
		prompt       string
		promptTokens string
		n            int
		temp         float64
		topK         int
		topP, minP   float64
		repPen       float64
		repLastN     int
		seed         int64
		stops        []string
		asJSON       bool
		stats        bool
		ignoreEOS    bool
		chatMode     bool
		system       string
	)
	cmd := &cobra.Command{
		Use:   "run -m MODEL -p PROMPT",
		Short: "Generate text from a prompt, streaming tokens to stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			so := engine.SampleOptions{Temp: temp, TopK: topK, TopP: topP, MinP: minP, RepPenalty: repPen, RepLastN: repLastN, Seed: uint64(seed)}
			if err := so.Validate(); err != nil {
				return err
			}
			if n < 0 {
				return fmt.Errorf("-n %d: must be ≥ 0", n)
			}
			if (prompt == "") == (promptTokens == "") {
				return errors.New("give exactly one of -p PROMPT (- for stdin) and --prompt-tokens 1,2,3")
			}
			if chatMode && promptTokens != "" {
				return errors.New("--chat formats -p PROMPT; it does not apply to --prompt-tokens")
			}
			if system != "" && !chatMode {
				return errors.New("--system needs --chat")
			}
			if prompt == "-" {
				b, err := io.ReadAll(os.Stdin)
				if err != nil {
					return err
				}
				prompt = string(b)
			}
			pol, err := rf.sw.offloadPolicy()
			if err != nil {
				return err
			}
			l, err := rf.load(ctx)
			if err != nil {
				return err
			}
			defer l.Close()
			var ids []int
			if promptTokens != "" {
				if ids, err = parseIDs(promptTokens); err != nil {
					return fmt.Errorf("--prompt-tokens: %w", err)
				}
			} else {
				if l.tok == nil {
					return fmt.Errorf("%s has no tokenizer: pass --prompt-tokens", l.dir)
				}
				if chatMode {
					if ids, err = chatTokens(l.tok, l.rm.Manifest.Tokenizer.ChatTemplate, system, prompt); err != nil {
						return fmt.Errorf("%s: %w", l.dir, err)
					}
				} else {
					ids = l.tok.Encode(prompt, true)
				}
			}
			sess, err := l.model.NewSession()
			if err != nil {
				return err
			}
			defer sess.Close()
			out := cmd.OutOrStdout()
			var text strings.Builder
			var stream *tokenizer.StreamDecoder
			if l.tok != nil {
				stream = l.tok.NewStreamDecoder()
			}
			opts := engine.GenerateOptions{Sample: so, MaxTokens: n}
			if l.tok != nil && !ignoreEOS {
				opts.StopAtEOG = l.tok.IsEOG
			}
			opts.OnToken = func(id int) error {
				if stream == nil {
					return nil
				}
				piece := stream.Push(id)
				text.WriteString(piece)
				if !asJSON {
					_, err := io.WriteString(out, piece)
					return err
				}
				return nil
			}
			if len(stops) > 0 {
				opts.StopText = func(int) bool {
					for _, s := range stops {
						if strings.Contains(text.String(), s) {
							return true
						}
					}
					return false
				}
			}
			// Prefill offload: a peer prefills all but the last prompt token
			// (checked here), and Generate continues from the last one.
			var off *swarm.OffloadResult
			gen := ids
			if l.node != nil && n > 0 && pol.Mode != swarm.OffloadOff {
				if repPen != 0 && repPen != 1 {
					off = &swarm.OffloadResult{Reason: "--repeat-penalty needs the whole prompt in the sampler"}
				} else {
					r, err := l.node.Offload(ctx, l.id, l.model, sess, ids, pol)
					if err != nil {
						return err
					}
					off = &r
					if r.Used {
						gen = ids[len(ids)-1:]
					}
				}
			}
			var res *engine.Result
			if n == 0 {
				res = &engine.Result{Reason: "length"}
			} else if res, err = sess.Generate(ctx, gen, opts); err != nil {
				return err
			}
			if stream != nil {
				rest := stream.Flush()
				text.WriteString(rest)
				if !asJSON {
					io.WriteString(out, rest)
				}
			}
			final := text.String()
			if res.Reason == "stop" {
				for _, s := range stops {
					if i := strings.Index(final, s); i >= 0 {
						final = final[:i]
					}
				}
			}
			if asJSON {
				return printJSON(out, map[string]any{
					"prompt_tokens": ids, "tokens": nonNil(res.Tokens), "text": final, "stop_reason": res.Reason,
					"prefill_ms": res.Stats.Prefill.Seconds() * 1000, "decode_tok_s": decodeRate(res.Stats),
					"expert_hits": res.Stats.Paging.Hits, "expert_misses": res.Stats.Paging.Misses,
					"expert_bytes_paged": res.Stats.Paging.BytesPaged, "expert_stall_ms": res.Stats.Paging.Stall.Seconds() * 1000,
					"offload_used": off != nil && off.Used, "offload_peer": offPeer(off), "offload_bytes": offBytes(off),
					"offload_ms": offMS(off),
				})
			}
			fmt.Fprintln(out)
			if stats {
				ps := res.Stats.Paging
				fmt.Fprintf(os.Stderr, "prompt %d tokens, prefill %.1f ms; %d tokens at %.1f tok/s (%s)\n",
					len(ids), res.Stats.Prefill.Seconds()*1000, len(res.Tokens), decodeRate(res.Stats), res.Reason)
				if off != nil {
					printOffload(os.Stderr, off)
				}
				if ps != (engine.PagingStats{}) {
					fmt.Fprintf(os.Stderr, "experts: %d hits, %d misses, %s paged, %.1f ms stalled\n",
						ps.Hits, ps.Misses, humanBytes(int64(ps.BytesPaged)), ps.Stall.Seconds()*1000)
				}
			}
			if res.Reason == "interrupted" {
				fmt.Fprintln(os.Stderr, "interrupted")
			}
			return nil
		},
	}
	rf.sw = &runSwarm{}
	rf.register(cmd)
	rf.sw.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&prompt, "prompt", "p", "", "prompt text (- reads stdin); BOS is added when the tokenizer says so")
	f.StringVar(&promptTokens, "prompt-tokens", "", "raw prompt token ids, comma-separated (no BOS added)")
	f.IntVarP(&n, "n", "n", 128, "maximum new tokens")
	def := engine.DefaultSampleOptions()
	f.Float64Var(&temp, "temp", def.Temp, "temperature (0 = greedy argmax)")
	f.IntVar(&topK, "top-k", def.TopK, "keep the k most likely tokens (0 = off)")
	f.Float64Var(&topP, "top-p", def.TopP, "keep the smallest set with this probability mass (1 = off)")
	f.Float64Var(&minP, "min-p", def.MinP, "drop tokens below this fraction of the most likely one (0 = off)")
	f.Float64Var(&repPen, "repeat-penalty", def.RepPenalty, "repetition penalty (1 = off)")
	f.IntVar(&repLastN, "repeat-last-n", def.RepLastN, "tokens the repetition penalty looks back over")
	f.Int64Var(&seed, "seed", 0, "random seed for sampling")
	f.StringArrayVar(&stops, "stop", nil, "stop when the output contains this text (repeatable)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object at the end instead of streaming text")
	f.BoolVar(&stats, "stats", false, "print timing and expert-paging counters to stderr at the end")
	f.BoolVar(&ignoreEOS, "ignore-eos", false, "keep generating past end-of-generation tokens")
	f.BoolVar(&chatMode, "chat", false, "format -p as a user message with the model's chat template (special tokens in it are parsed)")
	f.StringVar(&system, "system", "", "system message for --chat")
	return cmd
}

func nonNil(v []int) []int {
	if v == nil {
		return []int{}
	}
	return v
}

func decodeRate(s engine.Stats) float64 {
	var total float64
	for _, d := range s.TokenLatency {
		total += d.Seconds()
	}
	if total == 0 {
		return 0
	}
	return float64(len(s.TokenLatency)) / total
}

// parseIDs parses "1,403,407".
func parseIDs(s string) ([]int, error) {
	var ids []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad token id %q", f)
		}
		ids = append(ids, v)
	}
	if len(ids) == 0 {
		return nil, errors.New("no token ids")
	}
	return ids, nil
}

func offPeer(o *swarm.OffloadResult) string {
	if o == nil || !o.Used {
		return ""
	}
	return o.Peer
}

func offBytes(o *swarm.OffloadResult) uint64 {
	if o == nil {
		return 0
	}
	return o.Received
}

func offMS(o *swarm.OffloadResult) float64 {
	if o == nil {
		return 0
	}
	return o.Elapsed.Seconds() * 1000
}

// printOffload is run --stats' prefill offload line.
func printOffload(w io.Writer, o *swarm.OffloadResult) {
	if !o.Used {
		fmt.Fprintf(w, "prefill offload: not used (%s)\n", o.Reason)
		return
	}
	enc := "raw"
	if o.Compressed {
		enc = "deflate"
	}
	fmt.Fprintf(w, "prefill offload: peer %s, KV %s, %s received (%s), %.1f ms (estimate %.1f ms, local %.1f ms), max |Δlogit| %.2g\n",
		o.Peer, humanBytes(int64(o.KVBytes)), humanBytes(int64(o.Received)), enc, o.Elapsed.Seconds()*1000,
		o.Estimate.Seconds()*1000, o.Local.Seconds()*1000, o.MaxDiff)
}
