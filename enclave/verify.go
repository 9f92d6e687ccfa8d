package enclave

import (
	"bytes"
	"context"
	"crypto/hmac"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/store"
)

// BackupReport is what VerifyBackup checked.
type BackupReport struct {
	Keys     int  // key records opened
	Rollback bool // a rollback record was present and its MAC verified
	Records  int  // records checked against the rollback record's digest (version 2)
}

// VerifyBackup checks that a backup (opened read-only) is restorable on
// this TPM: its sealed root key unseals here, its rollback record's MAC
// verifies under that key, its records are the set that record's digest
// vouches for (ErrRecordsAltered otherwise; a cluster's store: the digest
// in its cluster rollback record), and every stored key record opens. It changes
// nothing. (On another TPM, restore with `keywarden recover` and the
// recovery shares instead.)
func VerifyBackup(ctx context.Context, tpm transport.TPM, db *store.DB) (BackupReport, error) {
	var rep BackupReport
	root, err := Unseal(ctx, tpm, db)
	if err != nil {
		return rep, fmt.Errorf("the backup's root key does not unseal on this TPM: %w", err)
	}
	defer root.Close()
	st, err := loadRollbackState(ctx, db)
	if err != nil {
		return rep, err
	}
	if st != nil {
		if !st.verify(root) {
			return rep, fmt.Errorf("%w: the backup's rollback record does not verify", ErrWrongRootKey)
		}
		rep.Rollback = true
		if st.V >= 3 {
			k := root.Subkey(SubkeyRollbackLedger)
			h := newLedgerHash(k.Reveal())
			k.Wipe()
			err := db.View(ctx, func(tx *store.Tx) error {
				es, tdig, err := readRangeEntries(tx, h)
				if err != nil {
					return err
				}
				if !hmac.Equal(h.tableCommitment(tdig), st.Records) {
					return fmt.Errorf("%w: the backup's range entries are not the ones its rollback record vouches for", ErrRecordsAltered)
				}
				rep.Records, _, _, err = h.checkAllRanges(tx, es)
				return err
			})
			if err != nil {
				return rep, err
			}
		} else if st.V == 2 {
			k := root.Subkey(SubkeyRollbackLedger)
			h := newLedgerHash(k.Reveal())
			k.Wipe()
			var d digest
			if err := db.View(ctx, func(tx *store.Tx) (err error) { d, rep.Records, err = h.scan(tx); return }); err != nil {
				return rep, err
			}
			if !hmac.Equal(h.commitment(d), st.Records) {
				return rep, fmt.Errorf("%w: the backup's %d records are not the ones its rollback record vouches for", ErrRecordsAltered, rep.Records)
			}
		}
	}
	if err := verifyClusterRecord(ctx, db, root, &rep); err != nil {
		return rep, err
	}
	err = db.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketKeys, nil, func(k, v []byte) error {
			o, m, ok := bytes.Cut(k, []byte{0})
			if !ok {
				return fmt.Errorf("enclave: key record with a malformed name")
			}
			rec, err := decodeKeyRecord(v)
			if err != nil {
				return fmt.Errorf("enclave: key record of %s/%s damaged: %w", o, m, err)
			}
			pt, err := root.Open(Binding{Kind: "key", Owner: Owner(o), Method: string(m)}, rec.Sealed)
			clear(pt)
			if err != nil {
				return fmt.Errorf("key record %d (%s, %s): %w", rep.Keys+1, o, m, err)
			}
			rep.Keys++
			return nil
		})
	})
	return rep, err
}

// verifyClusterRecord checks the nodes' rollback records, when the store
// has them (a cluster): their MACs, and the XOR of their digest shares
// against a scan at the same revision.
func verifyClusterRecord(ctx context.Context, db *store.DB, root *Root, rep *BackupReport) error {
	k := root.Subkey(SubkeyRollbackLedger)
	h := newLedgerHash(k.Reveal())
	k.Wipe()
	var recs map[string]*nodeState
	var d digest
	var n int
	err := db.View(ctx, func(tx *store.Tx) (err error) {
		if recs, err = readNodes(tx); err != nil || len(recs) == 0 {
			return err
		}
		d, n, err = h.scan(tx)
		return err
	})
	if err != nil || len(recs) == 0 {
		return err
	}
	mk := root.Subkey(SubkeyRollback)
	ok := checkOthers(recs, mk.Reveal(), "") == nil
	mk.Wipe()
	if !ok {
		return fmt.Errorf("%w: a node's rollback record in the backup does not verify", ErrWrongRootKey)
	}
	rep.Rollback, rep.Records = true, n
	if shares(recs) != d {
		return fmt.Errorf("%w: the backup's %d records are not the ones its nodes' rollback records vouch for", ErrRecordsAltered, n)
	}
	return nil
}
