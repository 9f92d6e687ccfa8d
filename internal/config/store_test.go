package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStoreBackend: store.backend defaults to bbolt; etcd is chosen from a
// file or the environment, and the etcd section is checked only then.
func TestStoreBackend(t *testing.T) {
	c, err := Load(prodBase(), "", nil)
	if err != nil || c.Store.Backend != "bbolt" || c.Etcd.Prefix != "keywarden" || c.Etcd.DialTimeout != 5*time.Second {
		t.Fatalf("defaults: %+v %+v %v", c.Store, c.Etcd, err)
	}
	// An etcd section is ignored while the backend is bbolt.
	if _, err := Load(prodBase(), "", []string{"KEYWARDEN_ETCD_ENDPOINTS=http://etcd.internal:2379"}); err != nil {
		t.Fatalf("etcd section with bbolt: %v", err)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "k.yaml")
	if err := os.WriteFile(file, []byte("store:\n  backend: etcd\netcd:\n  endpoints: [\"https://e1:2379\", \"https://e2:2379\"]\n  prefix: acme\n  ca_file: /etc/keywarden/etcd-ca.pem\n  cert_file: /etc/keywarden/etcd.pem\n  key_file: /etc/keywarden/etcd-key.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Load(prodBase(), file, []string{"KEYWARDEN_ETCD_PREFIX=acme-eu"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Backend != "etcd" || strings.Join(c.Etcd.Endpoints, ",") != "https://e1:2379,https://e2:2379" || c.Etcd.Prefix != "acme-eu" || c.Etcd.CertFile != "/etc/keywarden/etcd.pem" {
		t.Fatalf("file + env: %+v %+v", c.Store, c.Etcd)
	}
	c, err = Load(prodBase(), "", []string{"KEYWARDEN_STORE_BACKEND=etcd", "KEYWARDEN_ETCD_ENDPOINTS=http://127.0.0.1:2379,http://[::1]:2379"})
	if err != nil || len(c.Etcd.Endpoints) != 2 {
		t.Fatalf("env, loopback http: %+v %v", c.Etcd, err)
	}
}

// TestEtcdValidationNamesTheField: every refusal names its setting; plain
// http reaches a loopback etcd only (the store's ciphertexts and the
// client's credentials would otherwise cross the network in the clear).
func TestEtcdValidationNamesTheField(t *testing.T) {
	etcd := func(env ...string) []string {
		return append([]string{"KEYWARDEN_STORE_BACKEND=etcd"}, env...)
	}
	cases := []struct {
		want string
		env  []string
	}{
		{"store.backend", []string{"KEYWARDEN_STORE_BACKEND=consul"}},
		{"etcd.endpoints", etcd()},
		{"etcd.endpoints: \"http://etcd.internal:2379\": plain http is allowed only to a loopback", etcd("KEYWARDEN_ETCD_ENDPOINTS=http://etcd.internal:2379")},
		{"etcd.endpoints", etcd("KEYWARDEN_ETCD_ENDPOINTS=etcd.internal:2379")},
		{"etcd.endpoints", etcd("KEYWARDEN_ETCD_ENDPOINTS=https://user:pw@e1:2379", "KEYWARDEN_ETCD_CA_FILE=/ca")},
		{"etcd.endpoints: mixes", etcd("KEYWARDEN_ETCD_ENDPOINTS=https://e1:2379,http://127.0.0.1:2379", "KEYWARDEN_ETCD_CA_FILE=/ca")},
		{"etcd.ca_file", etcd("KEYWARDEN_ETCD_ENDPOINTS=https://e1:2379")},
		{"etcd.cert_file", etcd("KEYWARDEN_ETCD_ENDPOINTS=https://e1:2379", "KEYWARDEN_ETCD_CA_FILE=/ca", "KEYWARDEN_ETCD_CERT_FILE=/c")},
		{"etcd.cert_file: a client certificate needs https", etcd("KEYWARDEN_ETCD_ENDPOINTS=http://127.0.0.1:2379", "KEYWARDEN_ETCD_CERT_FILE=/c", "KEYWARDEN_ETCD_KEY_FILE=/k")},
		{"etcd.prefix", etcd("KEYWARDEN_ETCD_ENDPOINTS=http://127.0.0.1:2379", "KEYWARDEN_ETCD_PREFIX=acme/")},
		{"etcd.dial_timeout", etcd("KEYWARDEN_ETCD_ENDPOINTS=http://127.0.0.1:2379", "KEYWARDEN_ETCD_DIAL_TIMEOUT=0s")},
		{"etcd.max_request_bytes", etcd("KEYWARDEN_ETCD_ENDPOINTS=http://127.0.0.1:2379", "KEYWARDEN_ETCD_MAX_REQUEST_BYTES=100")},
	}
	for _, tc := range cases {
		_, err := Load(prodBase(), "", tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v does not contain %q", tc.env, err, tc.want)
		}
	}
}

// TestClusterSection: store.backend embedded takes the cluster section's
// defaults (name = host name, peer 127.0.0.1:2380 advertised over https,
// client 127.0.0.1:2379), file and environment override them, and every
// refusal names its field.
func TestClusterSection(t *testing.T) {
	host, _ := os.Hostname()
	c, err := Load(prodBase(), "", []string{"KEYWARDEN_STORE_BACKEND=embedded"})
	if err != nil || c.Cluster.Name != host || c.Cluster.PeerListen != "127.0.0.1:2380" || c.Cluster.PeerAdvertise != "https://127.0.0.1:2380" || c.Cluster.ClientListen != "127.0.0.1:2379" {
		t.Fatalf("defaults: %+v %v", c.Cluster, err)
	}
	c, err = Load(prodBase(), "", []string{"KEYWARDEN_STORE_BACKEND=embedded", "KEYWARDEN_CLUSTER_NAME=n2", "KEYWARDEN_CLUSTER_PEER_LISTEN=0.0.0.0:2390", "KEYWARDEN_CLUSTER_PEER_ADVERTISE=https://10.0.0.2:2390"})
	if err != nil || c.Cluster.Name != "n2" || c.Cluster.PeerAdvertise != "https://10.0.0.2:2390" {
		t.Fatalf("env: %+v %v", c.Cluster, err)
	}
	// The section is not checked unless the backend is embedded.
	if _, err := Load(prodBase(), "", []string{"KEYWARDEN_CLUSTER_CLIENT_LISTEN=10.0.0.1:2379"}); err != nil {
		t.Fatalf("cluster section with bbolt: %v", err)
	}
	emb := func(env ...string) []string { return append([]string{"KEYWARDEN_STORE_BACKEND=embedded"}, env...) }
	for _, tc := range []struct {
		want string
		env  []string
	}{
		{"cluster.name", emb("KEYWARDEN_CLUSTER_NAME=a=b")},
		{"cluster.peer_listen", emb("KEYWARDEN_CLUSTER_PEER_LISTEN=2380", "KEYWARDEN_CLUSTER_PEER_ADVERTISE=https://h:2380")},
		{"cluster.peer_advertise", emb("KEYWARDEN_CLUSTER_PEER_ADVERTISE=http://10.0.0.1:2380")},
		{"cluster.peer_advertise", emb("KEYWARDEN_CLUSTER_PEER_LISTEN=0.0.0.0:2380")},
		{"cluster.client_listen", emb("KEYWARDEN_CLUSTER_CLIENT_LISTEN=10.0.0.1:2379")},
		{"cluster.start_timeout", emb("KEYWARDEN_CLUSTER_START_TIMEOUT=0s")},
	} {
		_, err := Load(prodBase(), "", tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want an error naming %s, got %v", tc.env, tc.want, err)
		}
	}
}
