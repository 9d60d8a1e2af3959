package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
	q8x         bool
	ropeAttn    bool

	sw *runSwarm // run's swarm flags (nil for bench)
}

func (f *runFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.model, "model", "m", "", modelFlagHelp)
	fl.StringVar(&f.adapter, "adapter", "", "GPU adapter to use (a substring of its name); default: the fastest found")
	fl.IntVarP(&f.ctxLen, "ctx", "c", 0, "context (KV cache) length in tokens; default min(model's, 4096)")
	fl.BoolVar(&f.kvF32, "kv-f32", false, "keep the KV cache in f32 instead of f16")
	fl.BoolVar(&f.q8x, "q8x", false, "decode: round each Q4_K matrix product's input to 8 bits and use integer dot products (llama.cpp's GPU arithmetic)")
	fl.BoolVar(&f.ropeAttn, "rope-in-attention", false, "decode: rotate q and k and write the KV cache inside the attention (one dispatch a layer fewer; experimental)")
	fl.IntVar(&f.batch, "prefill-chunk", 256, "prompt tokens per prefill pass")
	fl.IntVar(&f.expertCache, "expert-cache", 0, "MoE: keep at most N experts of each layer on the GPU, paging the rest in (0 = all)")
	fl.StringVar(&f.expertVRAM, "expert-vram", "", "MoE: bound the GPU memory of resident experts, e.g. 512MiB or 2GiB")
	fl.StringVar(&f.store, "store", "", "with -m MODEL_ID: the shard store holding the model ("+storeFlagHelp+")")
}

// modelName is the model as the user named it, for messages.
func (f *runFlags) modelName() string {
	if f.model != "" {
		return f.model
	}
	return os.Getenv("DOPPLER_MODEL")
}

// storeName reports whether -m names no file or directory but a model of
// the store by name (doppler run -m stories260K).
func (f *runFlags) storeName() bool {
	m := f.modelName()
	if m == "" || looksLikeModelID(m) {
		return false
	}
	_, err := os.Stat(m)
	return errors.Is(err, os.ErrNotExist) && !strings.ContainsRune(m, os.PathSeparator) && filepath.Ext(m) == ""
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
	} else if looksLikeModelID(f.model) || f.storeName() {
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
			return nil, fmt.Errorf("%s: %w", f.modelName(), err)
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

// runOptions are run's flags beside the model's (runFlags).
type runOptions struct {
	rf           runFlags
	prompt       string
	promptTokens string
	n            int
	sample       sampling
	seed         int64
	stops        []string
	asJSON       bool
	stats        bool
	ignoreEOS    bool
	chatMode     bool
	system       string
}

func newRun() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run -m MODEL [-p PROMPT]",
		Short: "Generate text from a prompt, streaming tokens to stdout; with no prompt on a terminal, chat",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return nil
			case o.rf.modelName() == "":
				return fmt.Errorf("run takes no arguments: name the model with -m %s (and the prompt with -p)", args[0])
			default:
				return fmt.Errorf("run takes no arguments: give the prompt with -p %q", strings.Join(args, " "))
			}
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := engineAvailable(); err != nil {
				return err
			}
			o.sample.Seed = uint64(o.seed)
			if err := o.check(); err != nil {
				return err
			}
			if wantsChat(o.prompt, o.promptTokens) {
				return runChat(cmd, &o.rf, o.system, o.sample, o.n)
			}
			return o.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	o.register(cmd)
	return cmd
}

func (o *runOptions) register(cmd *cobra.Command) {
	o.rf.sw = &runSwarm{}
	o.rf.register(cmd)
	o.rf.sw.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&o.prompt, "prompt", "p", "", "prompt text (- reads stdin); BOS is added when the tokenizer says so")
	f.StringVar(&o.promptTokens, "prompt-tokens", "", "raw prompt token ids, comma-separated (no BOS added)")
	f.IntVarP(&o.n, "n", "n", 128, "maximum new tokens (in the terminal chat: per answer, and only when given)")
	def := defaultSampling()
	f.Float64Var(&o.sample.Temp, "temp", def.Temp, "temperature (0 = greedy argmax)")
	f.IntVar(&o.sample.TopK, "top-k", def.TopK, "keep the k most likely tokens (0 = off)")
	f.Float64Var(&o.sample.TopP, "top-p", def.TopP, "keep the smallest set with this probability mass (1 = off)")
	f.Float64Var(&o.sample.MinP, "min-p", def.MinP, "drop tokens below this fraction of the most likely one (0 = off)")
	f.Float64Var(&o.sample.RepPenalty, "repeat-penalty", def.RepPenalty, "repetition penalty (1 = off)")
	f.IntVar(&o.sample.RepLastN, "repeat-last-n", def.RepLastN, "tokens the repetition penalty looks back over")
	f.Int64Var(&o.seed, "seed", 0, "random seed for sampling")
	f.StringArrayVar(&o.stops, "stop", nil, "stop before this text (repeatable); it is not printed")
	f.BoolVar(&o.asJSON, "json", false, "print one JSON object at the end instead of streaming text")
	f.BoolVar(&o.stats, "stats", false, "print timing and expert-paging counters to stderr at the end")
	f.BoolVar(&o.ignoreEOS, "ignore-eos", false, "keep generating past end-of-generation tokens")
	f.BoolVar(&o.chatMode, "chat", false, "format -p as a user message with the model's chat template (special tokens in it are parsed)")
	f.StringVar(&o.system, "system", "", "system message for --chat and the terminal chat")
}

// check validates the flags before the model is opened.
func (o *runOptions) check() error {
	if err := o.sample.validate(); err != nil {
		return err
	}
	if o.n < 0 {
		return fmt.Errorf("-n %d: must be ≥ 0", o.n)
	}
	if wantsChat(o.prompt, o.promptTokens) {
		return nil
	}
	switch {
	case (o.prompt == "") == (o.promptTokens == ""):
		return errors.New("give exactly one of -p PROMPT (- for stdin) and --prompt-tokens 1,2,3")
	case o.chatMode && o.promptTokens != "":
		return errors.New("--chat formats -p PROMPT; it does not apply to --prompt-tokens")
	case o.system != "" && !o.chatMode:
		return errors.New("--system needs --chat")
	}
	return nil
}

// run generates once: the prompt's continuation streamed to out (or one
// JSON object with --json), statistics on stderr with --stats.
func (o *runOptions) run(ctx context.Context, out io.Writer) error {
	if o.prompt == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return err
		}
		o.prompt = string(b)
	}
	pol, err := o.rf.sw.offloadPolicy()
	if err != nil {
		return err
	}
	src, err := o.rf.open(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	ids, err := o.promptIDs(src)
	if err != nil {
		return err
	}
	req := genRequest{ids: ids, maxTokens: o.n, sample: o.sample, ignoreEOS: o.ignoreEOS, stops: o.stops}
	if !o.asJSON {
		req.onText = func(text string) error {
			_, err := io.WriteString(out, text)
			return err
		}
	}
	// Prefill offload: a peer prefills all but the last prompt token
	// (checked here), and generation continues from the last one.
	var off *swarm.OffloadResult
	if src.node != nil && o.n > 0 && pol.Mode != swarm.OffloadOff {
		if o.sample.RepPenalty != 0 && o.sample.RepPenalty != 1 {
			off = &swarm.OffloadResult{Reason: "--repeat-penalty needs the whole prompt in the sampler"}
		} else {
			req.offload = pol
		}
	}
	res, err := generate(ctx, src, &o.rf, req)
	if err != nil {
		return err
	}
	if res.offload != nil {
		off = res.offload
	}
	if o.asJSON {
		return printJSON(out, jsonResult(ids, res, off))
	}
	fmt.Fprintln(out)
	if o.stats {
		printStats(os.Stderr, len(ids), res, off)
	}
	if res.reason == "interrupted" {
		fmt.Fprintln(os.Stderr, "interrupted")
	}
	return nil
}

// promptIDs tokenizes the prompt (through the chat template with --chat),
// or parses --prompt-tokens.
func (o *runOptions) promptIDs(src *modelSource) ([]int, error) {
	if o.promptTokens != "" {
		ids, err := parseIDs(o.promptTokens)
		if err != nil {
			return nil, fmt.Errorf("--prompt-tokens: %w", err)
		}
		return ids, nil
	}
	if src.tok == nil {
		return nil, fmt.Errorf("%s has no tokenizer: pass --prompt-tokens", o.rf.modelName())
	}
	if !o.chatMode {
		return src.tok.Encode(o.prompt, true), nil
	}
	ids, err := chatTokens(src.tok, src.rm.Manifest.Tokenizer.ChatTemplate, o.system, o.prompt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.rf.modelName(), err)
	}
	return ids, nil
}

// jsonResult is run --json's object.
func jsonResult(ids []int, res *genResult, off *swarm.OffloadResult) map[string]any {
	st := res.stats
	return map[string]any{
		"prompt_tokens": ids, "tokens": nonNil(res.tokens), "text": res.text, "stop_reason": res.reason,
		"prefill_ms": st.prefill.Seconds() * 1000, "decode_tok_s": st.decodeRate(),
		"expert_hits": st.paging.hits, "expert_misses": st.paging.misses,
		"expert_bytes_paged": st.paging.bytesPaged, "expert_stall_ms": st.paging.stall.Seconds() * 1000,
		"offload_used": off != nil && off.Used, "offload_peer": offPeer(off), "offload_bytes": offBytes(off),
		"offload_ms": offMS(off),
	}
}

// printStats is run --stats' report.
func printStats(w io.Writer, promptLen int, res *genResult, off *swarm.OffloadResult) {
	st := res.stats
	fmt.Fprintf(w, "prompt %d tokens, prefill %.1f ms; %d tokens at %.1f tok/s (%s)\n",
		promptLen, st.prefill.Seconds()*1000, len(res.tokens), st.decodeRate(), res.reason)
	if off != nil {
		printOffload(w, off)
	}
	if ps := st.paging; ps != (pagingStats{}) {
		fmt.Fprintf(w, "experts: %d hits, %d misses, %s paged, %.1f ms stalled\n",
			ps.hits, ps.misses, humanBytes(int64(ps.bytesPaged)), ps.stall.Seconds()*1000)
	}
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
