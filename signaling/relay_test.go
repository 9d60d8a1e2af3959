//go:build !js

package signaling

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

// turnClient allocates on the relay with the given password.
func turnClient(t *testing.T, r *Relay, password string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ice := r.ICEServer()
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: r.Addr().String(), STUNServerAddr: r.Addr().String(),
		Username: ice.Username, Password: password, Realm: "doppler", Conn: conn, RTO: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	relayed, err := c.AllocateWithContext(ctx)
	return c, relayed, err
}

func TestTURNRelay(t *testing.T) {
	r, err := NewRelay(net.IPv4(127, 0, 0, 1), RelayOptions{MaxAllocations: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ice := r.ICEServer()
	if len(ice.URLs) != 1 || !strings.HasPrefix(ice.URLs[0], "turn:127.0.0.1:") || ice.Credential == "" {
		t.Fatalf("ICE server %+v", ice)
	}
	// Wrong credentials: refused.
	if _, _, err := turnClient(t, r, "wrong"); err == nil {
		t.Fatal("allocation with a wrong password succeeded")
	}
	// Two clients relay to each other through loopback relay addresses.
	_, a, err := turnClient(t, r, ice.Credential)
	if err != nil {
		t.Fatal(err)
	}
	c2, b, err := turnClient(t, r, ice.Credential)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []net.PacketConn{a, b} {
		if ip := p.LocalAddr().(*net.UDPAddr).IP; !ip.IsLoopback() {
			t.Fatalf("relay address %v is not loopback", p.LocalAddr())
		}
	}
	// Quota: a third allocation is refused.
	if _, _, err := turnClient(t, r, ice.Credential); err == nil {
		t.Fatal("allocation over MaxAllocations succeeded")
	}
	// A permission for a peer off the host is refused.
	if err := c2.CreatePermission(&net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9}); err == nil {
		t.Fatal("a loopback relay granted a permission for 192.0.2.1")
	}
	// a → b through the relay, once each has permitted the other (as ICE
	// checks do: a write creates the permission).
	if _, err := b.WriteTo([]byte("hello"), a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteTo([]byte("ping"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	for range 20 {
		n, from, err := b.ReadFrom(buf)
		if err != nil {
			t.Fatalf("read through the relay: %v", err)
		}
		if string(buf[:n]) == "ping" {
			if from.String() != a.LocalAddr().String() {
				t.Fatalf("from %v, want %v", from, a.LocalAddr())
			}
			return
		}
	}
	t.Fatal("no datagram through the relay")
}

func TestTURNRelayNeedsAnAddress(t *testing.T) {
	if _, err := NewRelay(net.IPv4zero, RelayOptions{}); err == nil {
		t.Fatal("a relay on 0.0.0.0 was created")
	}
}
