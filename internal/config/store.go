package config

import (
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/netcheck"
)

// Store selects the store backend.
type Store struct {
	// Backend is "bbolt" (one file under data.dir; the default), "etcd"
	// (an external etcd cluster: see the etcd section) or "embedded" (an
	// etcd member in this process, data under data.dir/etcd: see the
	// cluster section).
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
	case "bbolt", "etcd", "embedded":
	default:
		p.add("store.backend", "must be bbolt, etcd or embedded")
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

// Cluster configures this node's embedded etcd member (store.backend:
// embedded). Its peers and its own client speak mutual TLS with
// certificates of the cluster CA every member derives from the root key.
type Cluster struct {
	// Name is this node's member name (default: the host name); unique
	// in the cluster.
	Name string `key:"name"`
	// PeerListen is host:port the member listens on for its peers.
	PeerListen string `key:"peer_listen"`
	// PeerAdvertise is the URL peers reach this member at (default
	// https://<peer_listen>); its host goes into the node certificate.
	PeerAdvertise string `key:"peer_advertise"`
	// ClientListen is host:port of the member's client listener, which
	// only this node's own store client uses (keep it on loopback).
	ClientListen string `key:"client_listen"`
	// StartTimeout bounds the wait for the member to be ready (a joined
	// node catching up, a cluster electing its leader).
	StartTimeout time.Duration `key:"start_timeout"`
}

// resolve fills the defaults derived from other fields.
func (c *Cluster) resolve() {
	if c.Name == "" {
		if h, err := os.Hostname(); err == nil {
			c.Name = h
		}
	}
	if c.PeerAdvertise == "" && c.PeerListen != "" {
		c.PeerAdvertise = "https://" + c.PeerListen
	}
}

// validate checks the cluster section when the backend is embedded.
func (c Cluster) validate(backend string) (p problems) {
	if backend != "embedded" {
		return nil
	}
	if c.Name == "" || strings.ContainsAny(c.Name, "=,/ \t\n\x00") || len(c.Name) > 63 {
		p.add("cluster.name", "must be 1 to 63 characters without '=', ',', '/' or spaces (default: the host name)")
	}
	for _, f := range [][2]string{{"cluster.peer_listen", c.PeerListen}, {"cluster.client_listen", c.ClientListen}} {
		if _, port, err := net.SplitHostPort(f[1]); err != nil || port == "" || port == "0" {
			p.add(f[0], "must be host:port (e.g. 127.0.0.1:2380)")
		}
	}
	if u, err := url.Parse(c.PeerAdvertise); err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		p.add("cluster.peer_advertise", "must be https://host:port (peers speak mutual TLS); default https://<cluster.peer_listen>")
	} else if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
		p.add("cluster.peer_advertise", "must name a host peers can reach, not %s (set it when cluster.peer_listen is a wildcard address)", u.Hostname())
	}
	if host, _, err := net.SplitHostPort(c.ClientListen); err == nil {
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			p.add("cluster.client_listen", "must be a loopback address: only this node's own store client uses it")
		}
	}
	if c.StartTimeout <= 0 {
		p.add("cluster.start_timeout", "must be positive")
	}
	return p
}
