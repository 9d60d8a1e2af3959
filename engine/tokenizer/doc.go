// Package tokenizer turns text into token ids and back, reproducing
// llama.cpp's tokenizers (src/llama-vocab.cpp, src/unicode.cpp) token for
// token, for the vocabularies a GGUF file carries (rdrr.Tokenizer):
//
//   - "llama": SentencePiece BPE (llm_tokenizer_spm). Spaces are escaped as
//     U+2581, a space is prepended at the start of the text and after every
//     special token when AddSpacePrefix is set, adjacent symbols are merged
//     by highest vocabulary score (leftmost first on ties), and pieces the
//     vocabulary lacks fall back to <0xXX> byte tokens.
//   - "gpt2": byte-level BPE (llm_tokenizer_bpe). The text is split by the
//     pre-tokenizer that Pre names (gpt-2, llama3, qwen2, deepseek-llm,
//     deepseek-coder, …; see pretok.go), each piece is mapped through GPT-2's
//     bytes-to-unicode table and merged by merge rank.
//   - "bert": WordPiece (llm_tokenizer_wpm), greedy longest match.
//
// Before any of these, control, unknown and user-defined tokens written
// literally in the text are cut out and emitted as themselves (llama.cpp's
// tokenizer_st_partition). Tokenize with parseSpecial=false matches
// user-defined tokens only, as llama.cpp's parse_special=false does; Encode
// matches all of them.
//
// Decoding drops control and unknown tokens, turns byte tokens back into
// their bytes and, for SentencePiece, removes the space prefix of the first
// piece. StreamDecoder does the same one token at a time and only ever
// returns whole UTF-8 characters.
//
// A Tokenizer is immutable after New and safe for concurrent use.
package tokenizer
