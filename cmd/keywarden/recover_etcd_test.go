package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/internal/tpmsim"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// bboltToDump puts the records of a bbolt backup into a fresh etcd prefix
// (what a node on etcd holds), lets mutate change them without the
// appliance (nil: nothing), and writes the prefix's dump (what `keywarden
// backup` of a node on etcd downloads) to out.
func bboltToDump(t *testing.T, c *etcddev.Cluster, backup, out string, mutate func(*store.Tx) error) string {
	t.Helper()
	ctx := context.Background()
	src, err := store.Open(backup, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	db, err := store.New(c.Backend(t, etcdstore.Options{}), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := store.Copy(ctx, db, src, store.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		if err := db.Update(ctx, mutate); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := db.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRecoverAndVerifyEtcdDump: the backup of a node on etcd (an etcd
// dump) verifies like a bbolt backup (checksum, count, root key on the
// TPM, the records against the digest in the rollback record), and a dump
// with one record spliced in (checksum recomputed, as an attacker with the
// file would) or a damaged dump does not. recover restores a dump into a
// bbolt file and into an empty etcd prefix on a new host; a refused
// recovery into etcd leaves the prefix empty; a prefix with records is
// refused; a bbolt backup into etcd is refused with the way to get there.
func TestRecoverAndVerifyEtcdDump(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := etcddev.Embedded(t)
	ops := newRKOperators(t, dir, 3)
	oldCfgFile, oldCfg := devConfig(t, filepath.Join(dir, "old"), oldSeed)
	oldCfg.Dev = false
	sim, err := tpmsim.Open(oldSeed)
	if err != nil {
		t.Fatal(err)
	}
	h := makeOldHost(t, sim, oldCfg, dir, ops)
	sim.Close()
	dump := bboltToDump(t, c, h.backup, filepath.Join(dir, "backup.kwetcd"), nil)

	verify := func(file string) error {
		return run(ctx, []string{"backup", "-verify", file, "-dev", "-config", oldCfgFile})
	}
	out := captureStdout(t, func() error { return verify(dump) })
	if !strings.Contains(out, "etcd dump") || !strings.Contains(out, "3 key records open") || !strings.Contains(out, "rollback record verified: true") {
		t.Fatalf("backup -verify of an etcd dump:\n%s", out)
	}
	// A record spliced in: the dump is well-formed, its checksum right.
	spliced := bboltToDump(t, c, h.backup, filepath.Join(dir, "spliced.kwetcd"), func(tx *store.Tx) error {
		v, err := tx.Get(store.BucketKeys, store.Key(string(enclave.UserOwner("u0")), "PASSKEY"))
		if err != nil {
			return err
		}
		return tx.Put(store.BucketKeys, store.Key(string(h.deleted), "PASSKEY"), v)
	})
	if err := verify(spliced); !errors.Is(err, enclave.ErrRecordsAltered) {
		t.Fatalf("backup -verify of a dump with a spliced record: %v", err)
	}
	raw, _ := os.ReadFile(dump)
	raw[len(raw)/2] ^= 0x40
	damaged := filepath.Join(dir, "damaged.kwetcd")
	os.WriteFile(damaged, raw, 0o600)
	if err := verify(damaged); err == nil || !strings.Contains(err.Error(), "dump") {
		t.Fatalf("backup -verify of a damaged dump: %v", err)
	}

	shares := []string{"-identity", ops[0].file, "-identity", ops[1].file}

	// Into bbolt on a new host.
	newCfgFile, newCfg := devConfig(t, filepath.Join(dir, "new"), newSeed)
	if err := run(ctx, append([]string{"recover", "-dev", "-config", newCfgFile, "-backup", damaged}, shares...)); err == nil {
		t.Fatal("recover from a damaged dump")
	}
	if _, err := os.Stat(newCfg.Data.DB); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused recovery left a store behind")
	}
	if err := run(ctx, append([]string{"recover", "-dev", "-config", newCfgFile, "-backup", dump}, shares...)); err != nil {
		t.Fatalf("recover an etcd dump into bbolt: %v", err)
	}
	sim, err = tpmsim.Open(newSeed)
	if err != nil {
		t.Fatal(err)
	}
	checkKeysRelease(t, sim, newCfg, h)
	sim.Close()

	// Into etcd on another new host.
	const etcdSeed = newSeed + 1
	edir := filepath.Join(dir, "new-etcd")
	ecfgFile := writeConfigFile(t, edir, fmt.Sprintf("data:\n  dir: %s\ntpm:\n  simulator_seed: %d\nstore:\n  backend: etcd\netcd:\n  endpoints: [%s]\n  prefix: kw-recovered\n",
		filepath.Join(edir, "data"), etcdSeed, c.Endpoint(0)))
	ecfg, _, err := loadConfig([]string{"-config", ecfgFile}, true)
	if err != nil {
		t.Fatal(err)
	}
	recoverEtcd := func(backup string, extra ...string) error {
		return run(ctx, append([]string{"recover", "-dev", "-config", ecfgFile, "-backup", backup}, extra...))
	}
	if err := recoverEtcd(h.backup, shares...); err == nil || !strings.Contains(err.Error(), "store migrate -to etcd") {
		t.Fatalf("recover a bbolt backup with store.backend etcd: %v", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	keysUnder := func() int64 {
		resp, err := cli.Get(ctx, "kw-recovered/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	// One share only: refused after the restore, which is undone.
	if err := recoverEtcd(dump, "-share", h.shares[0], "-identity", ops[0].file); err == nil || !strings.Contains(err.Error(), "not enough recovery shares") {
		t.Fatalf("recover with one share: %v", err)
	}
	if n := keysUnder(); n != 0 {
		t.Fatalf("a refused recovery left %d keys in the prefix", n)
	}
	if err := recoverEtcd(dump, shares...); err != nil {
		t.Fatalf("recover an etcd dump into etcd: %v", err)
	}
	if err := recoverEtcd(dump, shares...); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("recover into a prefix with records: %v", err)
	}
	sim, err = tpmsim.Open(etcdSeed)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	db, err := openStoreDB(ctx, ecfg, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkKeysInDB(t, sim, db, h)
	if !auditContains(t, ecfg, actionRecover) {
		t.Fatal("the recovery into etcd is not in the audit log")
	}
}
