package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/doppler-llm/doppler/rdrr"
	"github.com/doppler-llm/doppler/swarm/swarmbench"
)

// runEvilNode is node --evil KIND (hidden): a malicious peer for the swarm
// bench's link mode (swarmbench.RunEvil) on a bare libp2p host listening
// on listen, attacking the peers of model id it reaches through targets.
// src is the model's RDRR directory (the spoiled blocks' source). It
// prints the "listening" contract lines and runs until ctx ends.
func runEvilNode(ctx context.Context, w io.Writer, kindName, src, idArg string, listen, targets []string) error {
	kind, err := swarmbench.ParseEvilKind(kindName)
	if err != nil {
		return fmt.Errorf("--evil: %w", err)
	}
	if src == "" {
		return errors.New("--evil needs --evil-src, the model's RDRR directory")
	}
	id, err := rdrr.ParseHash(idArg)
	if err != nil {
		return fmt.Errorf("--evil needs --pull MODEL_ID: %w", err)
	}
	if err := checkListen(listen); err != nil {
		return err
	}
	if err := checkPeers("--bootstrap", targets); err != nil {
		return err
	}
	infos := make([]peer.AddrInfo, 0, len(targets))
	for _, t := range targets {
		ai, _ := peer.AddrInfoFromString(t)
		infos = append(infos, *ai)
	}
	if len(listen) == 0 {
		listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings(listen...))
	if err != nil {
		return fmt.Errorf("malicious host: %w", err)
	}
	defer h.Close()
	for _, a := range h.Addrs() {
		fmt.Fprintf(w, "listening %s/p2p/%s\n", a, h.ID())
	}
	if f, ok := w.(*os.File); ok {
		f.Sync()
	}
	return swarmbench.RunEvil(ctx, h, kind, src, id, infos)
}
