package enclave

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"filippo.io/age"
)

// TestCombineShareFiles: recovery rebuilds the root key from T share
// files, or from the shares a backup records, with the operators' age
// identities; fewer shares, a wrong identity or a store without a record
// are refused.
func TestCombineShareFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := openDB(t, filepath.Join(dir, "k.db"))
	defer db.Close()
	ops := newOperators(t, 3)
	raw := NewRootKey()

	if _, _, err := CombineShareFiles(ctx, db, nil, ops[0].id, ops[1].id); !errors.Is(err, ErrNoRecoveryRecord) {
		t.Fatalf("no record, no files: err = %v, want ErrNoRecoveryRecord", err)
	}
	shares, err := SetupRecovery(ctx, db, raw, RecoveryOptions{Recipients: recipientsOf(ops), Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, s := range shares {
		p := filepath.Join(dir, s.FileName())
		if err := os.WriteFile(p, s.File(), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}

	for _, tc := range []struct {
		name  string
		files []string
		ops   []operator
		used  []int
	}{
		{"files 1 and 3", []string{files[0], files[2]}, []operator{ops[0], ops[2]}, []int{1, 3}},
		{"files 3 and 2", []string{files[2], files[1]}, []operator{ops[1], ops[2]}, []int{3, 2}},
		{"recorded, operators 2 and 3", nil, []operator{ops[1], ops[2]}, []int{2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, used, err := CombineShareFiles(ctx, db, tc.files, tc.ops[0].id, tc.ops[1].id)
			if err != nil {
				t.Fatal(err)
			}
			defer key.Wipe()
			if !key.Equal(raw) || !slices.Equal(used, tc.used) {
				t.Fatalf("key equal %v, used %v; want %v", key.Equal(raw), used, tc.used)
			}
		})
	}

	for _, tc := range []struct {
		name  string
		files []string
		ops   []operator
		want  error
	}{
		{"one file", files[:1], ops[:1], ErrTooFewShares},
		{"the same file twice", []string{files[0], files[0]}, ops[:1], ErrDuplicateShare},
		{"wrong identity", []string{files[0], files[1]}, []operator{ops[0], ops[2]}, ErrShareIdentity},
		{"recorded, one operator", nil, ops[2:], ErrTooFewShares},
		{"missing file", []string{files[0], filepath.Join(dir, "missing.age")}, ops[:2], os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, _, err := CombineShareFiles(ctx, db, tc.files, idsOf(tc.ops)...)
			if !errors.Is(err, tc.want) {
				key.Wipe()
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func idsOf(ops []operator) []age.Identity {
	var ids []age.Identity
	for _, o := range ops {
		ids = append(ids, o.id)
	}
	return ids
}
