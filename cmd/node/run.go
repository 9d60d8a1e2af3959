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

	"github.com/doppler-llm/doppler/engine/tokenizer"
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

// modelSource is the model run and bench use, opened but not yet on the
// GPU (the engine wiring loads it there): its package, from a directory,
// the store or the swarm, and its tokenizer.
type modelSource struct {
	rm   *rdrr.Model
	tok  *tokenizer.Tokenizer // nil when the model has no tokenizer
	dir  string
	done func() // closes the model's store, when it came from one

	node *swarm.Node  // the swarm node, when run joined one
	id   rdrr.ModelID // the model's ID, when it came through the node
}

func (s *modelSource) Close() {
	if s.done != nil {
		s.done()
	}
}

// open opens the model that -m names, through the swarm when run joined
// it, and its tokenizer.
func (f *runFlags) open(ctx context.Context) (src *modelSource, err error) {
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
	src = &modelSource{rm: rm, tok: tok, dir: dir, done: done, node: node}
	if node != nil {
		src.id = rm.ID
	}
	return src, nil
}

// expertVRAMBytes parses --expert-vram (0 when unset).
func (f *runFlags) expertVRAMBytes() (int64, error) {
	if f.expertVRAM == "" {
		return 0, nil
	}
	vram, err := parseSize(f.expertVRAM)
	if err != nil || vram <= 0 {
		return 0, fmt.Errorf("--expert-vram %q: want a size such as 512MiB or 2GiB", f.expertVRAM)
	}
	return vram, nil
}

// expertTracker is the swarm's expert usage tracker of src's model when
// run joined the swarm and pages experts (nil otherwise): the engine
// reports its routing to it for gossip and reads ahead the clusters
// gatekeepers publish.
func (f *runFlags) expertTracker(src *modelSource, vram int64) *swarm.ExpertTracker {
	if src.node == nil || len(src.rm.Manifest.Experts) == 0 || (f.expertCache <= 0 && vram <= 0) {
		return nil
	}
	tr, err := src.node.Experts(src.rm.ID)
	if err != nil {
		slog.Warn("expert usage gossip off", "err", err)
		return nil
	}
	return tr
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
		Use:   "run -m MODEL [-p PROMPT]",
		Short: "Generate text from a prompt, streaming tokens to stdout; with no prompt on a terminal, chat",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := engineAvailable(); err != nil {
				return err
			}
			ctx := cmd.Context()
			so := sampling{Temp: temp, TopK: topK, TopP: topP, MinP: minP, RepPenalty: repPen, RepLastN: repLastN, Seed: uint64(seed)}
			if err := so.validate(); err != nil {
				return err
			}
			if n < 0 {
				return fmt.Errorf("-n %d: must be ≥ 0", n)
			}
			if wantsChat(prompt, promptTokens) {
				return runChat(cmd, &rf, system, so, n)
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
			src, err := rf.open(ctx)
			if err != nil {
				return err
			}
			defer src.Close()
			var ids []int
			if promptTokens != "" {
				if ids, err = parseIDs(promptTokens); err != nil {
					return fmt.Errorf("--prompt-tokens: %w", err)
				}
			} else {
				if src.tok == nil {
					return fmt.Errorf("%s has no tokenizer: pass --prompt-tokens", src.dir)
				}
				if chatMode {
					if ids, err = chatTokens(src.tok, src.rm.Manifest.Tokenizer.ChatTemplate, system, prompt); err != nil {
						return fmt.Errorf("%s: %w", src.dir, err)
					}
				} else {
					ids = src.tok.Encode(prompt, true)
				}
			}
			out := cmd.OutOrStdout()
			var text strings.Builder
			var stream *tokenizer.StreamDecoder
			if src.tok != nil {
				stream = src.tok.NewStreamDecoder()
			}
			req := genRequest{ids: ids, maxTokens: n, sample: so}
			if src.tok != nil && !ignoreEOS {
				req.stopAtEOG = src.tok.IsEOG
			}
			req.onToken = func(id int) error {
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
				req.stopText = func(int) bool {
					for _, s := range stops {
						if strings.Contains(text.String(), s) {
							return true
						}
					}
					return false
				}
			}
			// Prefill offload: a peer prefills all but the last prompt token
			// (checked here), and generation continues from the last one.
			var off *swarm.OffloadResult
			if src.node != nil && n > 0 && pol.Mode != swarm.OffloadOff {
				if repPen != 0 && repPen != 1 {
					off = &swarm.OffloadResult{Reason: "--repeat-penalty needs the whole prompt in the sampler"}
				} else {
					req.offload = pol
				}
			}
			res, err := generate(ctx, src, &rf, req)
			if err != nil {
				return err
			}
			if res.offload != nil {
				off = res.offload
			}
			if stream != nil {
				rest := stream.Flush()
				text.WriteString(rest)
				if !asJSON {
					io.WriteString(out, rest)
				}
			}
			final := text.String()
			if res.reason == "stop" {
				for _, s := range stops {
					if i := strings.Index(final, s); i >= 0 {
						final = final[:i]
					}
				}
			}
			st := res.stats
			if asJSON {
				return printJSON(out, map[string]any{
					"prompt_tokens": ids, "tokens": nonNil(res.tokens), "text": final, "stop_reason": res.reason,
					"prefill_ms": st.prefill.Seconds() * 1000, "decode_tok_s": st.decodeRate(),
					"expert_hits": st.paging.hits, "expert_misses": st.paging.misses,
					"expert_bytes_paged": st.paging.bytesPaged, "expert_stall_ms": st.paging.stall.Seconds() * 1000,
					"offload_used": off != nil && off.Used, "offload_peer": offPeer(off), "offload_bytes": offBytes(off),
					"offload_ms": offMS(off),
				})
			}
			fmt.Fprintln(out)
			if stats {
				ps := st.paging
				fmt.Fprintf(os.Stderr, "prompt %d tokens, prefill %.1f ms; %d tokens at %.1f tok/s (%s)\n",
					len(ids), st.prefill.Seconds()*1000, len(res.tokens), st.decodeRate(), res.reason)
				if off != nil {
					printOffload(os.Stderr, off)
				}
				if ps != (pagingStats{}) {
					fmt.Fprintf(os.Stderr, "experts: %d hits, %d misses, %s paged, %.1f ms stalled\n",
						ps.hits, ps.misses, humanBytes(int64(ps.bytesPaged)), ps.stall.Seconds()*1000)
				}
			}
			if res.reason == "interrupted" {
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
	f.IntVarP(&n, "n", "n", 128, "maximum new tokens (in the terminal chat: per answer, and only when given)")
	def := defaultSampling()
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
	f.StringVar(&system, "system", "", "system message for --chat and the terminal chat")
	return cmd
}

func nonNil(v []int) []int {
	if v == nil {
		return []int{}
	}
	return v
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
