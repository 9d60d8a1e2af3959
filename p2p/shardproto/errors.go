package shardproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/doppler-llm/doppler/p2p/wire"
)

// Errors of an exchange. Every error wraps at most one of these (plus
// rdrr.ErrBadBlock / rdrr.ErrBadProof / rdrr.ErrBadSignature and the wire
// package's errors where they apply).
var (
	// ErrNotFound: the peer does not have the model or shard (wire.CodeNotFound).
	ErrNotFound = errors.New("peer does not have it")
	// ErrRemote: the peer answered another wire.Error (busy, bad request,
	// internal); the *wire.Error is wrapped too.
	ErrRemote = errors.New("peer refused")
	// ErrProtocol: the peer broke the protocol: a malformed or oversize
	// frame, an unexpected message, a block out of order or of the wrong
	// size (also wraps the wire error).
	ErrProtocol = errors.New("protocol violation")
	// ErrGone: the exchange ended under the peer's feet: the stream ended
	// (EOF, reset) or a frame was cut short, or the peer could not be
	// reached. This is churn — the peer went away — not misbehaviour: the
	// blocks before it were delivered, and nothing bad was.
	ErrGone = errors.New("peer went away")
	// ErrTimeout: the peer sent nothing for the frame timeout (a stalled peer).
	ErrTimeout = errors.New("peer stalled")
	// ErrBadManifest: the bytes a peer sent do not hash to the model ID or
	// are not a valid manifest.
	ErrBadManifest = errors.New("manifest does not match the model ID")
)

// Classify turns a transport error of an exchange with peer into one of
// the package's sentinels (ctx is consulted first: a cancelled exchange is
// the caller's doing, not the peer's).
func Classify(ctx context.Context, peer string, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("peer %s: %w", peer, ctx.Err())
	case errors.Is(err, ErrGone):
		return fmt.Errorf("peer %s: %w", peer, err)
	case errors.Is(err, os.ErrDeadlineExceeded) || IsTimeout(err):
		return fmt.Errorf("peer %s: %w: %v", peer, ErrTimeout, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.ErrClosedPipe),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("peer %s: %w: stream ended early: %v", peer, ErrGone, err)
	case errors.Is(err, wire.ErrTruncated):
		return fmt.Errorf("peer %s: %w: %w", peer, ErrGone, err)
	case errors.Is(err, wire.ErrFrameTooLarge), errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrTooManySkips):
		return fmt.Errorf("peer %s: %w: %w", peer, ErrProtocol, err)
	}
	return fmt.Errorf("peer %s: %w", peer, err)
}

// IsTimeout reports whether err is a timeout (a net.Error or a deadline).
func IsTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// RemoteError turns a wire.Error that peer answered into a sentinel.
func RemoteError(peer string, e *wire.Error) error {
	if e.Code == wire.CodeNotFound {
		return fmt.Errorf("peer %s: %w: %w", peer, ErrNotFound, e)
	}
	return fmt.Errorf("peer %s: %w: %w", peer, ErrRemote, e)
}
