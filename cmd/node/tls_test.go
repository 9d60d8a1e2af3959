package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doppler-llm/doppler/rdrr"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// (PEM) into dir, as the README's openssl command makes one.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "doppler"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestPullSeedTLS: `doppler pull ID --seed https://…` from a serve with a
// self-signed --tls-cert fails naming the way to trust it, and succeeds
// with --ca CERT; a --ca file with no certificate is an error.
func TestPullSeedTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	cert, key := selfSigned(t, tmp)
	dir := convertStories(t)
	man, err := os.ReadFile(filepath.Join(dir, rdrr.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	id := rdrr.Sum(man)
	sctx, scancel := context.WithCancel(ctx)
	url, _ := startCommand(t, sctx, scancel, []string{"serve", dir, "--http", "127.0.0.1:0", "--no-api",
		"--tls-cert", cert, "--tls-key", key, "--store", filepath.Join(tmp, "serve")}, id, false)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("serve with --tls-cert listens on %s, want https://", url)
	}

	o, err := cliContext(ctx, "pull", id.String(), "--seed", url, "--store", filepath.Join(tmp, "untrusted"), "--wait", "5s")
	if err == nil || !strings.Contains(err.Error(), "--ca") {
		t.Fatalf("pull from a self-signed seed without --ca: %v\n%s\nwant an error naming --ca", err, o)
	}
	t.Logf("without --ca: %v", err)
	if _, err := cliContext(ctx, "pull", id.String(), "--seed", url, "--ca", key, "--store", filepath.Join(tmp, "badca")); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("--ca with a key file: %v, want 'no PEM certificate'", err)
	}
	out := filepath.Join(tmp, "out")
	if o, err := cliContext(ctx, "pull", id.String(), "--seed", url, "--ca", cert, "-o", out, "--store", filepath.Join(tmp, "trusted")); err != nil {
		t.Fatalf("pull --ca: %v\n%s", err, o)
	}
	verified(t, ctx, out, id)
}
