//go:build !js

package signaling

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/pion/turn/v5"
)

// RelayOptions configure a Relay. Zero fields take the defaults shown.
type RelayOptions struct {
	// MaxAllocations bounds the relayed ports open at once (64); more are
	// refused (486 Allocation Quota Reached).
	MaxAllocations int
	Logger         *slog.Logger
}

// Relay is a TURN server (pion/turn) on one IP of the node, handed to
// browsers through the signaling welcome. Its use is a loopback node:
// Chromium never gathers loopback host candidates on Linux, so two
// browsers on the same host could not reach each other over loopback
// only; with the relay each gets a relay candidate on the node's
// loopback address and every packet goes to and from that address.
//
// It relays only between addresses of its own family and scope: a
// loopback relay refuses permissions for any non-loopback peer, so it can
// never carry traffic off the host. Credentials are random per Relay.
type Relay struct {
	srv        *turn.Server
	conn       net.PacketConn
	url        string
	user, pass string

	mu     sync.Mutex
	allocs int
}

// NewRelay starts a TURN server on ip (a UDP port picked by the system).
func NewRelay(ip net.IP, opts RelayOptions) (*Relay, error) {
	if ip == nil || ip.IsUnspecified() {
		return nil, errors.New("signaling: a TURN relay needs a specific IP, not a wildcard")
	}
	if opts.MaxAllocations <= 0 {
		opts.MaxAllocations = 64
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	network := "udp4"
	if ip.To4() == nil {
		network = "udp6"
	}
	conn, err := net.ListenPacket(network, net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return nil, fmt.Errorf("signaling: TURN relay: %w", err)
	}
	var b [12]byte
	rand.Read(b[:])
	r := &Relay{conn: conn, user: "doppler", pass: hex.EncodeToString(b[:])}
	const realm = "doppler"
	key := turn.GenerateAuthKey(r.user, realm, r.pass)
	loopback := ip.IsLoopback()
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: realm,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			if ra.Username != r.user {
				return "", nil, false
			}
			return ra.Username, key, true
		},
		QuotaHandler: func(_, _ string, _ net.Addr) bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.allocs < opts.MaxAllocations
		},
		EventHandler: turn.EventHandler{
			OnAllocationCreated: func(src, _ net.Addr, _, _, _ string, relay net.Addr, _ int) {
				r.mu.Lock()
				r.allocs++
				r.mu.Unlock()
				log.Debug("relay: allocation", "client", src, "relay", relay)
			},
			OnAllocationDeleted: func(net.Addr, net.Addr, string, string, string) {
				r.mu.Lock()
				r.allocs--
				r.mu.Unlock()
			},
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            conn,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{RelayAddress: ip, Address: ip.String()},
			PermissionHandler: func(_ net.Addr, peer net.IP) bool {
				return !loopback || peer.IsLoopback()
			},
		}},
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("signaling: TURN relay: %w", err)
	}
	r.srv = srv
	host := ip.String()
	if ip.To4() == nil {
		host = "[" + host + "]"
	}
	r.url = "turn:" + host + ":" + strconv.Itoa(conn.LocalAddr().(*net.UDPAddr).Port) + "?transport=udp"
	return r, nil
}

// ICEServer is the relay as browsers configure it.
func (r *Relay) ICEServer() ICEServer {
	return ICEServer{URLs: []string{r.url}, Username: r.user, Credential: r.pass}
}

// Addr is the relay's UDP address.
func (r *Relay) Addr() net.Addr { return r.conn.LocalAddr() }

// Close stops the relay.
func (r *Relay) Close() error { return r.srv.Close() }
