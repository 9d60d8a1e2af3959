// Package tokenizer turns text into token ids and back, reproducing
// llama.cpp's tokenizers (src/llama-vocab.cpp, src/unicode.cpp) token for
// token, for the vocabularies a GGUF file carries (rdrr.Tokenizer):
//
//   - "llama": SentencePiece BPE (llm_tokenizer_spm). Spaces are escaped as
//     U+2581, a space is prepended at the start of the text and after every
//     special token when AddSpacePrefix is set, adjacent symbols are merged
//     by highest vocabulary score (leftmost first on ties), and pieces the
//     vocabulary lacks fall back to <0xXX> byte tokens (spm.go).
//   - "gpt2": byte-level BPE (llm_tokenizer_bpe). The text is split by the
//     pre-tokenizer that Pre names (gpt-2, llama3, qwen2, deepseek-llm,
//     deepseek-coder, deepseek-v3, gpt-4o, tekken, …; pretok.go), each piece
//     is mapped through GPT-2's bytes-to-unicode table and merged by merge
//     rank (bpe.go). Like llama.cpp, the gpt-2 and llama3 patterns run as
//     hand-written scanners; the others run as Go regexps over llama.cpp's
//     "collapsed" text, with \s+(?!\S) emulated (pretok_regex.go).
//   - "bert": WordPiece (llm_tokenizer_wpm): lowercase, strip accents,
//     split, greedy longest match (wpm.go).
//
// Before any of these, control, unknown and user-defined tokens written
// literally in the text are cut out and emitted as themselves, longest
// first (llama.cpp's tokenizer_st_partition). Tokenize with
// parseSpecial=false matches user-defined tokens only, as llama.cpp's
// parse_special=false does (this is what the ggml-vocab goldens use);
// Encode matches all of them.
//
// Decoding drops control and unknown tokens, turns byte tokens back into
// their bytes and, for SentencePiece, removes the space prefix of the first
// piece. StreamDecoder does the same one token at a time and only ever
// returns whole UTF-8 characters.
//
// Known differences from llama.cpp:
//   - Decode strips the space prefix from the first piece that has text;
//     llama.cpp's detokenize spends it on the first token even when that is
//     BOS, so it decodes [<s>, ▁Hello] to " Hello" where Decode gives
//     "Hello" (as SentencePiece itself does).
//   - Decode does not apply clean_up_tokenization_spaces (" ," -> ",", …),
//     which llama.cpp's detokenize does for most BPE and WordPiece vocabs
//     but its per-token streaming does not; Decode and StreamDecoder agree.
//   - Per-token lstrip/rstrip that llama.cpp sets from general.name (Phi-3:
//     rstrip around special tokens; jina, modern-bert: lstrip of <mask>) is
//     not applied: rdrr.Tokenizer carries no model name. This only matters
//     when special tokens are parsed from text.
//   - llama.cpp marks only one EOT or FIM token found by name as control,
//     in hash order; this package marks all of them.
//   - Character classes come from Go's unicode tables (Unicode 15.0) and a
//     generated NFD table (nfd_table.go), not llama.cpp's unicode-data.cpp;
//     they can differ for code points assigned in later Unicode versions.
//   - WordPiece assumes llama.cpp's default normalizer (lowercase, strip
//     accents); rdrr.Tokenizer does not carry tokenizer.ggml.normalizer.*.
//
// Pre-tokenizers whose patterns need more than \s+(?!\S)-style lookahead
// (jais-2, tiny_aya, superbpe, kimi-k2, afmoe, …) and the gemma4, t5, rwkv
// and plamo2 models are not implemented: New returns ErrUnsupported.
//
// A Tokenizer is immutable after New and safe for concurrent use.
package tokenizer
