// Package repl is the chat on the terminal that doppler run opens when it
// is given no prompt and its input is a terminal, like ollama run: a
// ">>> " prompt, the answer streamed as it is generated, the conversation
// carried from turn to turn through the model's chat template.
//
// Lines starting with a slash are commands: /bye exits (as does Ctrl-D,
// the end of the input), /clear forgets the conversation, /help (or /?)
// lists the commands. An interrupt (Ctrl-C) during an answer stops that
// answer and keeps what was printed of it, in the conversation too; at
// the prompt it only prints how to exit.
//
// Each turn renders the whole conversation with [chat.Tokens] (the
// model's template, or a plain "User:/Assistant:" transcript for a model
// without one) and feeds the session only what follows the longest prefix
// it shares with the tokens already in the KV cache, rewinding the cache
// to that prefix when the rendered history and the generated tokens part.
// When the conversation no longer fits the context, the oldest exchanges
// are dropped, with a line saying so; a message that does not fit on its
// own is refused, and the chat goes on.
//
// It drives the engine, so natively it needs cgo: in a build without cgo
// the package is this comment alone (see kernels).
package repl
