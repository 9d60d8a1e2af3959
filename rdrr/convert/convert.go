package convert

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/quant"
)

// Options controls ToRDRR.
type Options struct {
	Writer rdrr.WriterOptions
	// Quant, when valid, requantizes weight matrices to F16, Q8_0 or Q4_K
	// (rows that do not divide into the target's blocks fall back to the
	// next finer type: Q4_K → Q8_0 → F16).
	Quant quant.DType
	// SignKey, when set, signs the manifest into manifest.sig.
	SignKey ed25519.PrivateKey
	// Progress, when set, is called with source bytes done and total.
	Progress func(done, total int64)
}

// source is what a converter reads: a model's config, tokenizer and tensors.
type source interface {
	config() (rdrr.Config, error)
	tokenizer() (*rdrr.Tokenizer, error)
	tensors() []srcTensor
	info() rdrr.Info
	Close() error
}

// srcTensor is a tensor of a source model, already renamed to RDRR's
// (GGUF-style) names and with a row-major shape.
type srcTensor struct {
	name  string
	dtype quant.DType
	shape []int64
	size  int64
	open  func() (io.Reader, error)
	// convert, when set, turns the source bytes into dtype's bytes (an HF
	// tensor whose source dtype differs, a permutation, …).
	expert bool
}

// ToRDRR converts a GGUF file or an HF safetensors directory into the RDRR
// directory out. It writes into a temporary directory beside out and
// renames it into place on success: a failed conversion leaves nothing, and
// an existing non-empty out is never touched.
func ToRDRR(ctx context.Context, in, out string, opts Options) (rdrr.ModelID, error) {
	if err := checkOut(out); err != nil {
		return rdrr.ModelID{}, err
	}
	src, err := openSource(in)
	if err != nil {
		return rdrr.ModelID{}, err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(out)), 0o755); err != nil {
		return rdrr.ModelID{}, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(out)), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return rdrr.ModelID{}, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	id, err := convertInto(ctx, src, tmp, opts)
	if err != nil {
		return rdrr.ModelID{}, fmt.Errorf("%s: %w", in, err)
	}
	if err := checkOut(out); err != nil {
		return rdrr.ModelID{}, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return rdrr.ModelID{}, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return rdrr.ModelID{}, err
	}
	ok = true
	return id, nil
}

func checkOut(out string) error {
	ents, err := os.ReadDir(out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s already exists and is not empty; remove it or choose another output", out)
	}
	return nil
}

func openSource(in string) (source, error) {
	kind, err := rdrr.Sniff(in)
	if err != nil {
		return nil, err
	}
	switch kind {
	case rdrr.KindRDRR:
		return nil, fmt.Errorf("%s is already an RDRR directory", in)
	case rdrr.KindHF:
		return openHF(in)
	}
	return openGGUF(in)
}

func convertInto(ctx context.Context, src source, dir string, opts Options) (rdrr.ModelID, error) {
	cfg, err := src.config()
	if err != nil {
		return rdrr.ModelID{}, err
	}
	tok, err := src.tokenizer()
	if err != nil {
		return rdrr.ModelID{}, fmt.Errorf("tokenizer: %w", err)
	}
	w, err := rdrr.NewWriter(dir, opts.Writer)
	if err != nil {
		return rdrr.ModelID{}, err
	}
	defer w.Abort()
	tensors := src.tensors()
	var total, done int64
	for _, t := range tensors {
		total += t.size
	}
	step := func(n int64) {
		done += n
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
	}
	var experts []srcTensor
	for _, t := range tensors {
		if err := ctx.Err(); err != nil {
			return rdrr.ModelID{}, err
		}
		dt, data, err := prepare(t, opts.Quant)
		if err != nil {
			return rdrr.ModelID{}, err
		}
		t.dtype = dt
		if t.expert {
			if err := w.DeclareExpertTensor(t.name, dt, t.shape); err != nil {
				return rdrr.ModelID{}, err
			}
			experts = append(experts, t)
			continue
		}
		r, err := data()
		if err != nil {
			return rdrr.ModelID{}, fmt.Errorf("tensor %s: %w", t.name, err)
		}
		if err := w.AddTensor(t.name, dt, t.shape, r); err != nil {
			return rdrr.ModelID{}, err
		}
		step(t.size)
	}
	if err := writeExperts(ctx, w, cfg, experts, opts.Quant, step); err != nil {
		return rdrr.ModelID{}, err
	}
	// The manifest holds only what determines the model's output; the
	// name and the file it came from go to info.json, outside the ID.
	id, err := w.Finish(&rdrr.Manifest{Config: cfg, Tokenizer: tok})
	if err != nil {
		return rdrr.ModelID{}, err
	}
	if err := rdrr.WriteInfo(dir, src.info()); err != nil {
		return rdrr.ModelID{}, err
	}
	if opts.SignKey != nil {
		b, err := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile))
		if err != nil {
			return rdrr.ModelID{}, err
		}
		sig, err := rdrr.Sign(b, opts.SignKey)
		if err != nil {
			return rdrr.ModelID{}, err
		}
		if err := rdrr.WriteFileAtomic(filepath.Join(dir, rdrr.SignatureFile), sig); err != nil {
			return rdrr.ModelID{}, err
		}
	}
	return id, nil
}

// writeExperts writes every expert's slices, one expert at a time, layer by
// layer, so each (layer, expert) owns its shards.
func writeExperts(ctx context.Context, w *rdrr.Writer, cfg rdrr.Config, experts []srcTensor, q quant.DType, step func(int64)) error {
	byLayer := map[int][]srcTensor{}
	maxLayer := -1
	for _, t := range experts {
		l, ok := layerOf(t.name)
		if !ok {
			return fmt.Errorf("expert tensor %s has no layer number", t.name)
		}
		if int(t.shape[0]) != cfg.Experts {
			return fmt.Errorf("expert tensor %s: outer dimension %d, but the model has %d experts", t.name, t.shape[0], cfg.Experts)
		}
		byLayer[l] = append(byLayer[l], t)
		maxLayer = max(maxLayer, l)
	}
	for l := 0; l <= maxLayer; l++ {
		ts := byLayer[l]
		if len(ts) == 0 {
			continue
		}
		// Read each fused tensor once per layer, then cut it per expert.
		datas := make([][]byte, len(ts))
		for i, t := range ts {
			_, open, err := prepare(t, q)
			if err != nil {
				return err
			}
			r, err := open()
			if err != nil {
				return fmt.Errorf("tensor %s: %w", t.name, err)
			}
			if datas[i], err = io.ReadAll(r); err != nil {
				return fmt.Errorf("tensor %s: %w", t.name, err)
			}
		}
		for e := 0; e < cfg.Experts; e++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := w.BeginExpert(l, e); err != nil {
				return err
			}
			for i, t := range ts {
				n := len(datas[i]) / cfg.Experts
				if err := w.AddExpertSlice(t.name, bytes.NewReader(datas[i][e*n:(e+1)*n])); err != nil {
					return err
				}
			}
			if err := w.EndExpert(); err != nil {
				return err
			}
		}
		for _, t := range ts {
			step(t.size)
		}
	}
	return nil
}

// layerOf parses N from "blk.N.…".
func layerOf(name string) (int, bool) {
	var l int
	if _, err := fmt.Sscanf(name, "blk.%d.", &l); err != nil {
		return 0, false
	}
	return l, true
}

// sourceInfo names a model after the file or directory it was converted
// from (its base name without the extension), for info.json.
func sourceInfo(format, path string) rdrr.Info {
	base := filepath.Base(filepath.Clean(path))
	return rdrr.Info{Name: strings.TrimSuffix(base, filepath.Ext(base)), Source: &rdrr.Source{Format: format, File: base}}
}
