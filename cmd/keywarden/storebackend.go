package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// checkStore checks what the store backend needs before anything opens:
// nothing for bbolt; for etcd, that the mTLS files load (config
// validation has checked the rest).
func checkStore(cfg config.Config) error {
	if cfg.Store.Backend != "etcd" {
		return nil
	}
	_, err := etcdOptions(cfg)
	return err
}

// etcdOptions are the etcd backend's options from the etcd section.
func etcdOptions(cfg config.Config) (etcdstore.Options, error) {
	e := cfg.Etcd
	opts := etcdstore.Options{Endpoints: e.Endpoints, Prefix: e.Prefix, DialTimeout: e.DialTimeout, MaxRequestBytes: e.MaxRequestBytes}
	if len(e.Endpoints) > 0 && strings.HasPrefix(e.Endpoints[0], "https://") {
		tc, err := etcdstore.TLSConfig(e.CAFile, e.CertFile, e.KeyFile)
		if err != nil {
			return opts, fmt.Errorf("etcd: %w", err)
		}
		opts.TLS = tc
	}
	return opts, nil
}

// openStoreDB opens the configured store backend under the store's façade:
// the bbolt file data.db, or the etcd cluster of the etcd section (with
// its mTLS files, under its prefix). The opts are the façade's; Timeout
// (the file lock) is bbolt's only. Every command that reads or writes the
// live store goes through here; recover (recover_target.go) and store
// migrate (migrate.go) open their stores themselves, and the embedded
// backend's store opens with its member (openMemberStore).
//
// Whatever the backend, a store other than bbolt must share the state that
// refuses or permits requests between nodes (checkSharedState).
func openStoreDB(ctx context.Context, cfg config.Config, opts store.Options) (*store.DB, error) {
	db, err := openBackendDB(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := checkSharedState(cfg.Store.Backend, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// openBackendDB opens the backend store.backend names (openStoreDB).
func openBackendDB(ctx context.Context, cfg config.Config, opts store.Options) (*store.DB, error) {
	switch cfg.Store.Backend {
	case "etcd":
	case "embedded":
		return nil, errEmbeddedOffline
	default:
		return store.Open(cfg.Data.DB, opts)
	}
	eopts, err := etcdOptions(cfg)
	if err != nil {
		return nil, err
	}
	b, err := etcdstore.Open(ctx, eopts)
	if err != nil {
		return nil, fmt.Errorf("store (etcd %s): %w", strings.Join(eopts.Endpoints, ","), err)
	}
	db, err := store.New(b, opts)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("store (etcd, prefix %q): %w", b.Prefix(), err)
	}
	return db, nil
}

// errEmbeddedOffline: on the embedded backend the store is the node's own
// etcd member, which only the running appliance starts (it needs the
// unsealed root key for the cluster's certificates); the commands that
// open the store while the server is stopped do not run there yet.
var errEmbeddedOffline = errors.New("with store.backend: embedded the store is this node's etcd member, which only `keywarden serve` (or `keywarden cluster init`) starts; this command does not run on the embedded backend yet")

// checkSharedState refuses a store that other nodes may write (any
// backend but bbolt) whose backend does not share the state that refuses
// or permits requests (store.EphemeralBackend): its nodes would each keep
// ceremonies, proofs, failure budgets and blocks to themselves, and an
// attacker would pick the node that has not heard (decisions/46). A
// backend that wraps etcdstore must pass its Ephemeral on.
func checkSharedState(backend string, db *store.DB) error {
	if backend == "" || backend == "bbolt" || db.Shared() {
		return nil
	}
	return fmt.Errorf("store.backend %s: the backend does not share ceremonies, proofs, failure budgets and blocks between nodes (no store.EphemeralBackend); refusing to serve", backend)
}
