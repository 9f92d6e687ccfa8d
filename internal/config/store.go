package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/netcheck"
)

// Store selects the store backend.
type Store struct {
	// Backend is "bbolt" (one file under data.dir; the default) or "etcd"
	// (an etcd cluster: see the etcd section).
	Backend string `key:"backend"`
}

// Etcd configures the etcd store backend (store.backend: etcd).
type Etcd struct {
	// Endpoints are the cluster's client URLs: https://host:2379, or
	// plain http to a loopback address only.
	Endpoints []string `key:"endpoints"`
	// Prefix is the key prefix under which this appliance cluster keeps
	// its records (<prefix>/<bucket>/<key>); two clusters sharing one etcd
	// need different prefixes.
	Prefix string `key:"prefix"`
	// CAFile is the CA that signed the etcd servers' certificates
	// (required with https endpoints); CertFile and KeyFile are this
	// appliance's client certificate for mutual TLS.
	CAFile   string `key:"ca_file"`
	CertFile string `key:"cert_file"`
	KeyFile  string `key:"key_file"`
	// DialTimeout bounds the connection and the first read at start.
	DialTimeout time.Duration `key:"dial_timeout"`
	// MaxRequestBytes is the servers' --max-request-bytes (etcd's default
	// is 1.5 MiB): a transaction larger than this is refused before it is
	// sent.
	MaxRequestBytes int `key:"max_request_bytes"`
}

func (s Store) validate() (p problems) {
	switch s.Backend {
	case "bbolt", "etcd":
	default:
		p.add("store.backend", "must be bbolt or etcd")
	}
	return p
}

// validate checks the etcd section when it is the chosen backend.
func (e Etcd) validate(backend string) (p problems) {
	if backend != "etcd" {
		return nil
	}
	if len(e.Endpoints) == 0 {
		p.add("etcd.endpoints", "store.backend etcd needs at least one endpoint (https://host:2379)")
	}
	schemes := map[string]bool{}
	for _, ep := range e.Endpoints {
		if err := netcheck.ServiceURL(ep); err != nil {
			p.add("etcd.endpoints", "%v", err)
			continue
		}
		u, _ := url.Parse(ep)
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
			p.add("etcd.endpoints", "%q: an endpoint is scheme://host:port, without path, query or credentials", ep)
		}
		schemes[u.Scheme] = true
	}
	if schemes["http"] && schemes["https"] {
		p.add("etcd.endpoints", "mixes http and https endpoints; use one scheme for the whole cluster")
	}
	if schemes["https"] && e.CAFile == "" {
		p.add("etcd.ca_file", "https endpoints need the CA that signed the etcd servers' certificates")
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		p.add("etcd.cert_file", "a client certificate needs etcd.cert_file and etcd.key_file together")
	}
	if e.CertFile != "" && schemes["http"] {
		p.add("etcd.cert_file", "a client certificate needs https endpoints")
	}
	if e.Prefix == "" || strings.HasSuffix(e.Prefix, "/") || strings.ContainsAny(e.Prefix, "\x00\n") {
		p.add("etcd.prefix", "must be non-empty, printable and not end with '/'")
	}
	if e.DialTimeout <= 0 {
		p.add("etcd.dial_timeout", "must be positive")
	}
	if e.MaxRequestBytes < 64<<10 {
		p.add("etcd.max_request_bytes", "must be at least 65536 (etcd's default is 1572864)")
	}
	return p
}
