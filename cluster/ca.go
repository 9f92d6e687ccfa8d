package cluster

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/keywarden/keywarden/enclave"
)

// CA is the cluster's certificate authority. Every member derives it
// from the root key alone (the Ed25519 seed is the root subkey
// enclave.SubkeyClusterCA, and the certificate is made from a fixed
// template with a deterministic signature), so all members have the same
// CA without ever sending it, and only a holder of the root key can sign a
// certificate the members accept as a peer or a client.
type CA struct {
	Cert *x509.Certificate
	DER  []byte
	key  ed25519.PrivateKey
}

// caEpoch is the CA certificate's NotBefore: fixed, so every member makes
// the same certificate.
var caEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// caNotAfter is RFC 5280's "no well-defined expiration date": the CA lives
// as long as the root key it is derived from.
var caNotAfter = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// DeriveCA derives the cluster CA from the root key.
func DeriveCA(root *enclave.Root) (*CA, error) {
	seed := root.Subkey(enclave.SubkeyClusterCA)
	defer seed.Wipe()
	key := ed25519.NewKeyFromSeed(seed.Reveal())
	pub := key.Public().(ed25519.PublicKey)
	ski := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(ski[:16]),
		Subject:               pkix.Name{CommonName: "keywarden cluster CA", Organization: []string{"Keywarden"}},
		NotBefore:             caEpoch,
		NotAfter:              caNotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski[:20],
	}
	// Ed25519 signatures are deterministic: the same certificate on every
	// member (CreateCertificate draws nothing from rand for them once the
	// serial is set).
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("cluster: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, DER: der, key: key}, nil
}

// Pool is a certificate pool of the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// NodeCert is a member's certificate and its key: made fresh at every
// start, never reused.
type NodeCert struct {
	Cert tls.Certificate
	DER  []byte
	Key  *ecdsa.PrivateKey
}

// nodeCertLifetime: a node makes a new certificate at every start; a year
// covers any run between restarts.
const nodeCertLifetime = 366 * 24 * time.Hour

// Issue makes a fresh P-256 key and a certificate for it signed by the CA,
// for both TLS server and client use (a member is a server to its peers
// and its own client, and a client of its peers), naming hosts (IP
// addresses or DNS names) as its SANs.
func (ca *CA) Issue(name string, hosts []string, now time.Time) (*NodeCert, error) {
	if len(hosts) == 0 {
		return nil, errors.New("cluster: a node certificate needs at least one host")
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Keywarden"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(nodeCertLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &k.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("cluster: node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &NodeCert{Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}, DER: der, Key: k}, nil
}

// TLSFiles are the PEM files etcd's embed package reads (it takes paths,
// not certificates).
type TLSFiles struct {
	CA, Cert, Key string
}

// WriteFiles writes the CA certificate and the node's certificate and key
// into dir (0700), each 0600, replacing the previous start's.
func WriteFiles(dir string, ca *CA, n *NodeCert) (TLSFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return TLSFiles{}, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(n.Key)
	if err != nil {
		return TLSFiles{}, err
	}
	f := TLSFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "node.pem"), Key: filepath.Join(dir, "node-key.pem")}
	for _, w := range []struct {
		path, typ string
		der       []byte
	}{{f.CA, "CERTIFICATE", ca.DER}, {f.Cert, "CERTIFICATE", n.DER}, {f.Key, "PRIVATE KEY", kder}} {
		tmp := w.path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: w.typ, Bytes: w.der}), 0o600); err != nil {
			return TLSFiles{}, err
		}
		if err := os.Rename(tmp, w.path); err != nil {
			return TLSFiles{}, err
		}
	}
	clear(kder)
	return f, nil
}

// ClientTLS is the TLS configuration of this node's etcd client: it
// trusts the cluster CA only and presents the node certificate.
func (ca *CA) ClientTLS(n *NodeCert) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool(), Certificates: []tls.Certificate{n.Cert}}
}
