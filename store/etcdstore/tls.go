package etcdstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig builds the client TLS configuration from PEM files: caFile is
// the CA that signed the etcd servers' certificates; certFile and keyFile
// are this client's certificate and key for mutual TLS (both or neither).
// TLS 1.2 at least, as etcd itself requires.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, errors.New("etcdstore: a CA file is needed for https endpoints")
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("etcdstore: a client certificate needs its key, and a key its certificate")
	}
	pemCA, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCA) {
		return nil, fmt.Errorf("etcdstore: CA file %s holds no PEM certificate", caFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			// The error names the files, never their contents.
			return nil, fmt.Errorf("etcdstore: client certificate %s / key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
