package rdrr

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ErrBadSignature is returned when manifest.sig does not verify.
var ErrBadSignature = errors.New("bad publisher signature")

// signature is the content of manifest.sig.
type signature struct {
	Alg string `json:"alg"` // "ed25519"
	Key string `json:"key"` // hex public key
	Sig string `json:"sig"` // hex signature over manifest.json's bytes
}

// Sign returns manifest.sig bytes: an ed25519 signature over the manifest.
func Sign(manifest []byte, key ed25519.PrivateKey) ([]byte, error) {
	s := signature{
		Alg: "ed25519",
		Key: hex.EncodeToString(key.Public().(ed25519.PublicKey)),
		Sig: hex.EncodeToString(ed25519.Sign(key, manifest)),
	}
	return json.Marshal(s)
}

// VerifySignature checks manifest.sig bytes against the manifest and
// returns the publisher's public key.
func VerifySignature(manifest, sig []byte) (ed25519.PublicKey, error) {
	var s signature
	if err := json.Unmarshal(sig, &s); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", SignatureFile, ErrBadSignature, err)
	}
	if s.Alg != "ed25519" {
		return nil, fmt.Errorf("%s: %w: algorithm %q (want ed25519)", SignatureFile, ErrBadSignature, s.Alg)
	}
	key, err := hex.DecodeString(s.Key)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%s: %w: malformed public key", SignatureFile, ErrBadSignature)
	}
	sg, err := hex.DecodeString(s.Sig)
	if err != nil || !ed25519.Verify(key, manifest, sg) {
		return nil, fmt.Errorf("%s: %w: does not match manifest.json", SignatureFile, ErrBadSignature)
	}
	return key, nil
}

// LoadSigningKey reads an ed25519 private key from a PEM file (PKCS #8, as
// `openssl genpkey -algorithm ed25519` writes) or, when the file does not
// exist and create is set, generates one and writes it with mode 0600.
func LoadSigningKey(path string, create bool) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		_, key, err := ed25519.GenerateKey(nil)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key (%T)", path, k)
	}
	return key, nil
}
