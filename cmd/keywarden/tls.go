package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// certReloader serves the certificate from files and reloads it on SIGHUP
// or when the files change (checked every 30 s), without dropping
// connections: only new handshakes see the new certificate.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	mu                sync.RWMutex
	cert              *tls.Certificate
	mtime             time.Time
	stop              chan struct{}
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log, stop: make(chan struct{})}
	if err := r.reload(); err != nil {
		return nil, err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		defer signal.Stop(hup)
		for {
			select {
			case <-r.stop:
				return
			case <-hup:
				if err := r.reload(); err != nil {
					log.Error("TLS reload on SIGHUP failed; keeping the old certificate", "err", err)
				}
			case <-t.C:
				if r.changed() {
					if err := r.reload(); err != nil {
						log.Error("TLS reload failed; keeping the old certificate", "err", err)
					}
				}
			}
		}
	}()
	return r, nil
}

func (r *certReloader) changed() bool {
	fi, err := os.Stat(r.certFile)
	if err != nil {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return fi.ModTime().After(r.mtime)
}

func (r *certReloader) reload() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s / key %s: %w", r.certFile, r.keyFile, err)
	}
	fi, _ := os.Stat(r.certFile)
	r.mu.Lock()
	r.cert = &c
	if fi != nil {
		r.mtime = fi.ModTime()
	}
	r.mu.Unlock()
	r.log.Info("TLS certificate loaded", "file", r.certFile)
	return nil
}

func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// Current returns the certificate being served.
func (r *certReloader) Current() *tls.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert
}

func (r *certReloader) Close() { close(r.stop) }

func requireClientCerts(c *tls.Config, caFile string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("listen.admin_client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return errors.New("listen.admin_client_ca: no PEM certificates in the file")
	}
	c.ClientCAs = pool
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return nil
}
