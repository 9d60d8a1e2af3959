package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/rdrr/convert"
	"github.com/doppler-llm/doppler/swarm"
)

// modelFlagHelp explains how to name a model.
const modelFlagHelp = "model: a GGUF file, an HF safetensors directory, or an RDRR directory (default $DOPPLER_MODEL)"

// resolveModel turns -m (or $DOPPLER_MODEL) into an RDRR directory,
// converting a GGUF file or HF directory into the local cache first.
func resolveModel(ctx context.Context, flag string) (string, error) {
	path := flag
	if path == "" {
		path = os.Getenv("DOPPLER_MODEL")
	}
	if path == "" {
		return "", errors.New("no model: pass -m MODEL (a GGUF file, HF directory or RDRR directory) or set DOPPLER_MODEL")
	}
	kind, err := rdrr.Sniff(path)
	if err != nil {
		return "", fmt.Errorf("model %s: %w", path, err)
	}
	if kind == rdrr.KindRDRR {
		return path, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("model %s: %w", path, err)
	}
	abs, _ := filepath.Abs(path)
	// The format tag keeps conversions made before model IDs came from
	// content only (docs/rdrr.md) from being reused.
	key := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d\x00content-id", abs, st.Size(), st.ModTime().UnixNano()))
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, "converted", filepath.Base(abs)+"-"+hex.EncodeToString(key[:6]))
	if _, err := rdrr.OpenDir(out); err == nil {
		return out, nil
	}
	os.RemoveAll(out) // a stale or broken conversion
	slog.Info("converting model into the local cache", "from", path, "to", out)
	update, finish := progressFunc("converting")
	_, err = convert.ToRDRR(ctx, path, out, convert.Options{Progress: update})
	finish()
	if err != nil {
		return "", err
	}
	return out, nil
}

// importModel makes a model complete in the store: a model ID (or unique
// prefix) already there, or a GGUF file / HF or RDRR directory, converted
// if needed and imported. seed and serve take their MODEL arguments
// through it.
func importModel(ctx context.Context, store *swarm.Store, arg string) (rdrr.ModelID, error) {
	if looksLikeModelID(arg) {
		id, err := parseModelID(store, arg)
		if err != nil {
			return id, err
		}
		st, ok := store.Status(id)
		if !ok {
			return id, fmt.Errorf("unknown model id %s (not in store %s)", id, store.Dir())
		}
		if st.CompleteShards < st.Shards {
			return id, fmt.Errorf("model %s: the store holds %d of %d shards; run doppler pull first", id, st.CompleteShards, st.Shards)
		}
		return id, nil
	}
	record := importRecord(arg)
	if record != "" {
		if b, err := os.ReadFile(record); err == nil {
			if id, err := rdrr.ParseHash(strings.TrimSpace(string(b))); err == nil && store.HoldsModel(id) {
				return id, nil // converted before
			}
		}
	}
	kind, err := rdrr.Sniff(arg)
	if err != nil {
		return rdrr.ModelID{}, fmt.Errorf("model %s: %w", arg, err)
	}
	if kind == rdrr.KindRDRR {
		return store.ImportDir(ctx, arg) // the user's directory: copied
	}
	return convertInto(ctx, store, arg, record)
}

// importRecord is where the model ID a GGUF file or HF directory was
// converted to is recorded: a file in the cache directory named by the
// source's path, size and mtime ("" when there is no cache directory or
// no such source).
func importRecord(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	cache, err := cacheDir()
	if err != nil {
		return ""
	}
	abs, _ := filepath.Abs(path)
	key := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d\x00content-id", abs, st.Size(), st.ModTime().UnixNano()))
	return filepath.Join(cache, "imported", hex.EncodeToString(key[:12]))
}

// convertInto converts a GGUF file or HF directory straight into the
// store: into one of its temporary directories, whose shard files the
// store then moves in (verified), so the model is on disk once, beside
// its source. The model ID goes to record (when not ""), so that a source
// whose model the store holds complete is not converted again.
func convertInto(ctx context.Context, store *swarm.Store, path, record string) (rdrr.ModelID, error) {
	tmp, err := store.TempDir()
	if err != nil {
		return rdrr.ModelID{}, fmt.Errorf("store %s: %w", store.Dir(), err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "model")
	slog.Info("converting model into the store", "from", path, "store", store.Dir())
	update, finish := progressFunc("converting")
	_, err = convert.ToRDRR(ctx, path, out, convert.Options{Progress: update})
	finish()
	if err != nil {
		return rdrr.ModelID{}, err
	}
	id, err := store.ImportTemp(ctx, out)
	if err != nil {
		return id, err
	}
	if record != "" {
		if err := os.MkdirAll(filepath.Dir(record), 0o755); err == nil {
			rdrr.WriteFileAtomic(record, []byte(id.String()+"\n"))
		}
	}
	return id, nil
}

// cacheDir is $DOPPLER_CACHE, else the user cache directory.
func cacheDir() (string, error) {
	if d := os.Getenv("DOPPLER_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (set DOPPLER_CACHE): %w", err)
	}
	return filepath.Join(d, "doppler"), nil
}
