package audit

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/store"
)

// OperatorActor is the actor of an offline command's line that names none.
const OperatorActor = "operator:cli"

// AppendOffline writes events to the log in opts.Dir and closes it (with
// its final anchor) before it returns: the audit lines of the commands an
// operator runs while the server is stopped (rollback accept, reseal,
// recovery reshare, recover), which hold the store themselves. An event
// without an Actor is the operator's ([OperatorActor]). The first event
// that cannot be written stops it, and its error is returned: the command
// must then not go on as if audited.
func AppendOffline(ctx context.Context, opts Options, events ...Event) error {
	l, err := Open(ctx, opts)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	for _, ev := range events {
		if ev.Actor == "" {
			ev.Actor = OperatorActor
		}
		if err := l.Record(ctx, ev); err != nil {
			_ = l.Close(ctx)
			return fmt.Errorf("audit log: %w", err)
		}
	}
	if err := l.Close(ctx); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// ForgetForeignHead is for a store restored from a backup onto a host
// (keywarden recover): the head recorded in the store ([HeadMetaKey]) is
// the position of the old host's audit log. When the log in dir holds that
// line (the old host's audit files are here: the same host, or copied)
// the head is kept and nil returned. When it does not (no audit files, or
// another log), the head would make this host's log look cut back forever,
// so it is removed from the store and returned: the caller writes its
// seq, hash and file into its own audit line ([Checkpoint.Fields]), so the
// old position stays on record. A head whose MAC does not verify under
// anchorKey is kept (nil): serve and `audit verify` report it as before.
func ForgetForeignHead(ctx context.Context, db *store.DB, dir string, anchorKey secret.Bytes) (*Checkpoint, error) {
	b, err := StoreHeads(db).LoadHead(ctx)
	if err != nil || b == nil {
		return nil, err
	}
	cp, err := OpenCheckpoint(b, anchorKey)
	if err != nil {
		return nil, nil
	}
	holds, err := logHolds(dir, anchorKey, cp)
	if err != nil || holds {
		return nil, err
	}
	err = db.Update(ctx, func(tx *store.Tx) error {
		err := tx.DeleteMeta(store.MetaAuditHead)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: forgetting the recorded head: %w", err)
	}
	return &cp, nil
}

// logHolds reports whether the log in dir holds the line cp names.
func logHolds(dir string, anchorKey secret.Bytes, cp Checkpoint) (bool, error) {
	rep, err := verify(dir, anchorKey, &cp, false)
	switch {
	case errors.Is(err, os.ErrNotExist) && rep.Lines == 0:
		return false, nil // no audit directory
	case err != nil && rep.Broken == nil:
		return false, fmt.Errorf("audit: reading %s: %w", dir, err)
	case rep.LastSeq < cp.Seq:
		return false, nil // the log ends before it (or there is none)
	case rep.Broken != nil && rep.Broken.Kind == KindTruncated && rep.Broken.Seq == cp.Seq:
		return false, nil // another line at its seq
	}
	return true, nil
}

// Fields describes c for an audit line: the seq, hash and file of a head.
func (c Checkpoint) Fields(prefix string) map[string]string {
	return map[string]string{
		prefix + "seq":  fmt.Sprint(c.Seq),
		prefix + "hash": c.Hash,
		prefix + "file": c.File,
	}
}
