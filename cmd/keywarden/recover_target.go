package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// recoverTarget is the store recover builds from a backup: db is open on
// it; commit makes it the store (and closes db), abort (deferred) undoes
// what was not committed. where names it for the operator.
type recoverTarget struct {
	db        *store.DB
	where     string
	commit    func() (kept string, err error)
	undo      func()
	committed bool
}

func (t *recoverTarget) abort() {
	if !t.committed && t.undo != nil {
		t.undo()
	}
	t.db.Close()
}

// openRecoverTarget puts the backup's records where the configured store
// lives, without touching the live store yet. One path per backup format
// and backend:
//
//   - a bbolt backup file into bbolt: a copy of the file staged beside the
//     store (store.StageRestore), renamed into place by commit;
//   - an etcd dump into bbolt: the dump's records copied into a new file
//     staged beside the store (store.StageNew), renamed by commit;
//   - an etcd dump into etcd: the dump restored into the configured
//     prefix, which must be empty (etcdstore.Restore); abort deletes what
//     it wrote;
//   - a bbolt backup with store.backend etcd: refused (recover into bbolt,
//     then `keywarden store migrate -to etcd`).
//
// An etcd dump is loaded and checked (record count, checksum, schema)
// before anything is written.
func openRecoverTarget(ctx context.Context, cfg config.Config, backup string, force bool) (*recoverTarget, error) {
	head, err := readHead(backup, 16)
	if err != nil {
		return nil, fmt.Errorf("recover: the backup: %w", err)
	}
	onEtcd := storeOnEtcd(cfg)
	if !etcdstore.IsDump(head) {
		if onEtcd {
			return nil, fmt.Errorf("recover: %s is a bbolt store file, which restores into a bbolt store only: recover with store.backend: bbolt, then move the store with `keywarden store migrate -to etcd`", backup)
		}
		staged, err := stageBackup(backup, cfg.Data.DB, force)
		if err != nil {
			return nil, err
		}
		db, err := store.Open(staged.Path, store.Options{})
		if err != nil {
			staged.Abort()
			return nil, fmt.Errorf("recover: the backup does not open: %w", err)
		}
		return bboltTarget(db, staged, cfg.Data.DB), nil
	}

	raw, err := os.ReadFile(backup)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	dump, err := etcdstore.LoadDump(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("recover: the backup %s: %w", backup, err)
	}
	src, err := store.New(dump, store.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("recover: the etcd dump %s: %w", backup, err)
	}
	defer src.Close()

	if !onEtcd {
		staged, err := store.StageNew(cfg.Data.DB, store.RestoreOptions{Replace: force})
		if errors.Is(err, store.ErrStoreExists) {
			return nil, fmt.Errorf("recover: a store exists at %s; refusing to overwrite it (add -force; the old file is kept beside it)", cfg.Data.DB)
		}
		if err != nil {
			return nil, fmt.Errorf("recover: %w", err)
		}
		db, err := store.Open(staged.Path, store.Options{})
		if err != nil {
			staged.Abort()
			return nil, fmt.Errorf("recover: %w", err)
		}
		if _, err := store.Copy(ctx, db, src, store.CopyOptions{}); err != nil {
			db.Close()
			staged.Abort()
			return nil, fmt.Errorf("recover: copy the etcd dump into %s: %w", staged.Path, err)
		}
		return bboltTarget(db, staged, cfg.Data.DB), nil
	}

	eopts, err := etcdOptions(cfg)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	where := fmt.Sprintf("etcd %s prefix %q", strings.Join(eopts.Endpoints, ","), cfg.Etcd.Prefix)
	if force {
		fmt.Fprintf(os.Stderr, "recover: -force does not clear an etcd prefix: %s must be empty\n", where)
	}
	es, err := etcdstore.Restore(ctx, eopts, bytes.NewReader(raw))
	if err != nil {
		if strings.Contains(err.Error(), "is not empty") {
			return nil, fmt.Errorf("recover: %w; recover into an empty prefix (a new etcd.prefix, or delete the old one with `etcdctl del --prefix %s/` once nothing serves it)", err, cfg.Etcd.Prefix)
		}
		return nil, fmt.Errorf("recover: restore the etcd dump into %s: %w", where, err)
	}
	// The restored prefix is deleted again unless the recovery completes.
	cli := es.Client()
	prefix := es.Prefix() + "/"
	undo := func() {
		if _, err := cli.Delete(context.WithoutCancel(ctx), prefix, clientv3.WithPrefix()); err != nil {
			fmt.Fprintf(os.Stderr, "recover: could not delete the restored records under %q again: %v; delete them before you recover again\n", prefix, err)
		}
	}
	db, err := store.New(es, store.Options{})
	if err != nil {
		undo()
		es.Close()
		return nil, fmt.Errorf("recover: the restored prefix: %w", err)
	}
	t := &recoverTarget{db: db, where: where}
	t.undo = undo
	t.commit = func() (string, error) {
		t.committed = true
		return "", db.Close()
	}
	return t, nil
}

// bboltTarget is a staged bbolt file: commit closes it and renames it
// into place; abort removes it.
func bboltTarget(db *store.DB, staged *store.Restore, where string) *recoverTarget {
	t := &recoverTarget{db: db, where: where, undo: func() { db.Close(); staged.Abort() }}
	t.commit = func() (string, error) {
		if err := db.Close(); err != nil {
			return "", err
		}
		kept, err := staged.Commit()
		if err == nil {
			t.committed = true
		}
		return kept, err
	}
	return t
}
