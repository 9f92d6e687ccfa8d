package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
)

// layouts are the three versioned layouts with the raw key each gives a
// prior value of ("user:a", "M") replaced at id: these bytes are the
// stored format and must not change.
var layouts = []struct {
	name string
	v    func(time.Duration) Versions
	raw  func(id string) string
}{
	{"keys", KeyVersions, func(id string) string { return "user:a\x00M\x00" + id }},
	{"custodian", CustodianVersions, func(id string) string { return "user:a\x00M\x00versions\x00" + id }},
	{"client_shares", ClientShareVersions, func(id string) string { return "user:a\x00M\x00versions\x00" + id }},
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func value(s string) func() ([]byte, error) { return func() ([]byte, error) { return []byte(s), nil } }

type listed struct {
	id    string
	at    time.Time
	value string
}

func list(t *testing.T, db *DB, v Versions, owner, method string) []listed {
	t.Helper()
	var out []listed
	err := db.View(context.Background(), func(tx *Tx) error {
		out = out[:0]
		return v.List(tx, owner, method, func(id string, at time.Time, val []byte) error {
			out = append(out, listed{id, at, string(val)})
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func update(t *testing.T, db *DB, fn func(tx *Tx) error) error {
	t.Helper()
	return db.Update(context.Background(), fn)
}

func TestVersions(t *testing.T) {
	const hour = time.Hour
	cases := []struct {
		name string
		run  func(t *testing.T, db *DB, v Versions, raw func(string) string)
	}{
		{"layout and ordering: oldest first, ids are 20-digit replacement times", func(t *testing.T, db *DB, v Versions, raw func(string) string) {
			// Kept out of order; listed by replacement time.
			for _, c := range []struct {
				at time.Duration
				v  string
			}{{2 * time.Minute, "b"}, {time.Minute, "a"}, {3 * time.Minute, "c"}} {
				if err := update(t, db, func(tx *Tx) error {
					_, err := v.KeepPrior(tx, "user:a", "M", t0.Add(c.at), value(c.v))
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}
			got := list(t, db, v, "user:a", "M")
			if len(got) != 3 || got[0].value != "a" || got[1].value != "b" || got[2].value != "c" {
				t.Fatalf("list = %+v, want a, b, c", got)
			}
			if !got[0].at.Equal(t0.Add(time.Minute)) || got[0].id != fmt.Sprintf("%020d", t0.Add(time.Minute).UnixNano()) {
				t.Fatalf("first = %+v", got[0])
			}
			// The raw key is the stored format.
			if err := db.View(context.Background(), func(tx *Tx) error {
				b, err := tx.Get(v.PriorBucket, []byte(raw(got[0].id)))
				if err == nil && string(b) != "a" {
					err = fmt.Errorf("raw value %q", b)
				}
				return err
			}); err != nil {
				t.Fatalf("prior not at its stored key: %v", err)
			}
			// Another method or owner lists nothing.
			if l := list(t, db, v, "user:a", "N"); len(l) != 0 {
				t.Fatalf("other method lists %+v", l)
			}
			if l := list(t, db, v, "user:", "aM"); len(l) != 0 {
				t.Fatalf("shifted owner lists %+v", l)
			}
		}},
		{"ids are unique within one commit", func(t *testing.T, db *DB, v Versions, _ func(string) string) {
			var ids []string
			if err := update(t, db, func(tx *Tx) error {
				ids = ids[:0]
				for _, s := range []string{"x", "y", "z"} {
					id, err := v.KeepPrior(tx, "user:a", "M", t0, value(s))
					if err != nil {
						return err
					}
					ids = append(ids, id)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if ids[0] == ids[1] || ids[1] == ids[2] || ids[0] != VersionID(t0) || ids[2] != VersionID(t0.Add(2)) {
				t.Fatalf("ids %v", ids)
			}
			if got := list(t, db, v, "user:a", "M"); len(got) != 3 || got[0].value != "x" || got[2].value != "z" {
				t.Fatalf("list %+v", got)
			}
		}},
		{"prune keeps the boundary and drops what is older", func(t *testing.T, db *DB, v Versions, _ func(string) string) {
			for i, at := range []time.Time{t0.Add(-1), t0, t0.Add(1)} {
				if err := update(t, db, func(tx *Tx) error {
					_, err := v.KeepPrior(tx, "user:a", "M", at, value(fmt.Sprint(i)))
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}
			// One retention time after t0: the version replaced exactly at
			// t0 is at the boundary and stays; the one before goes.
			if err := update(t, db, func(tx *Tx) error { return v.Prune(tx, "user:a", "M", t0.Add(hour)) }); err != nil {
				t.Fatal(err)
			}
			got := list(t, db, v, "user:a", "M")
			if len(got) != 2 || got[0].value != "1" || got[1].value != "2" {
				t.Fatalf("after prune %+v, want 1 and 2", got)
			}
			// KeepPrior prunes too.
			if err := update(t, db, func(tx *Tx) error {
				_, err := v.KeepPrior(tx, "user:a", "M", t0.Add(hour+2), value("3"))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if got := list(t, db, v, "user:a", "M"); len(got) != 1 || got[0].value != "3" {
				t.Fatalf("after keep %+v, want 3 alone", got)
			}
		}},
		{"no retention keeps nothing and prunes all", func(t *testing.T, db *DB, v Versions, _ func(string) string) {
			if err := update(t, db, func(tx *Tx) error {
				_, err := v.KeepPrior(tx, "user:a", "M", t0, value("old"))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			none := v
			none.Retention = -1
			called := false
			if err := update(t, db, func(tx *Tx) error {
				id, err := none.KeepPrior(tx, "user:a", "M", t0.Add(time.Second), func() ([]byte, error) { called = true; return nil, nil })
				if id != "" {
					return fmt.Errorf("id %q kept", id)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if called || len(list(t, db, v, "user:a", "M")) != 0 {
				t.Fatalf("retention <= 0: prior made %v, versions %+v", called, list(t, db, v, "user:a", "M"))
			}
		}},
		{"delete keeping a tombstone", func(t *testing.T, db *DB, v Versions, _ func(string) string) {
			err := update(t, db, func(tx *Tx) error {
				return v.DeleteKeepingPrior(tx, "user:a", "M", t0, value("tomb"))
			})
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("tombstone of nothing: %v, want ErrNotFound", err)
			}
			if err := update(t, db, func(tx *Tx) error { return v.Put(tx, "user:a", "M", []byte("cur")) }); err != nil {
				t.Fatal(err)
			}
			if err := update(t, db, func(tx *Tx) error {
				return v.DeleteKeepingPrior(tx, "user:a", "M", t0, value("tomb"))
			}); err != nil {
				t.Fatal(err)
			}
			if err := db.View(context.Background(), func(tx *Tx) error { _, err := v.Get(tx, "user:a", "M"); return err }); !errors.Is(err, ErrNotFound) {
				t.Fatalf("current after tombstone: %v", err)
			}
			got := list(t, db, v, "user:a", "M")
			if len(got) != 1 || got[0].value != "tomb" || got[0].id != VersionID(t0) {
				t.Fatalf("tombstone %+v", got)
			}
			// Delete purges the tombstone too; found says there was no current value.
			var found bool
			if err := update(t, db, func(tx *Tx) (err error) { found, err = v.Delete(tx, "user:a", "M"); return }); err != nil || found {
				t.Fatalf("Delete = %v, %v", found, err)
			}
			if got := list(t, db, v, "user:a", "M"); len(got) != 0 {
				t.Fatalf("after Delete %+v", got)
			}
		}},
		{"restore: take a prior, missing and bad ids", func(t *testing.T, db *DB, v Versions, _ func(string) string) {
			var id string
			if err := update(t, db, func(tx *Tx) (err error) {
				id, err = v.KeepPrior(tx, "user:a", "M", t0, value("old"))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			missing := VersionID(t0.Add(1))
			for _, c := range []struct {
				id   string
				want error
			}{
				{missing, ErrVersionNotFound},
				{"", ErrBadVersionID},
				{id[:19], ErrBadVersionID},
				{id + "0", ErrBadVersionID},
				{"9999999999999999999x", ErrBadVersionID},
				{"99999999999999999999", ErrBadVersionID}, // over int64
				{"-0000000000000000001", ErrBadVersionID},
				{"0000000000000000000\x00", ErrBadVersionID},
			} {
				err := db.View(context.Background(), func(tx *Tx) error { _, err := v.Prior(tx, "user:a", "M", c.id); return err })
				if !errors.Is(err, c.want) {
					t.Fatalf("Prior(%q) = %v, want %v", c.id, err, c.want)
				}
				if e, ok := apierr.As(err); !ok || e.Code != c.want.(*apierr.Error).Code || e.Status != c.want.(*apierr.Error).Status {
					t.Fatalf("Prior(%q) = %v, not the API error %v", c.id, err, c.want)
				}
			}
			var b []byte
			if err := update(t, db, func(tx *Tx) (err error) { b, err = v.TakePrior(tx, "user:a", "M", id); return }); err != nil || string(b) != "old" {
				t.Fatalf("TakePrior = %q, %v", b, err)
			}
			if got := list(t, db, v, "user:a", "M"); len(got) != 0 {
				t.Fatalf("TakePrior left %+v", got)
			}
			err := update(t, db, func(tx *Tx) error { _, err := v.TakePrior(tx, "user:a", "M", id); return err })
			if !errors.Is(err, ErrVersionNotFound) {
				t.Fatalf("second TakePrior: %v", err)
			}
		}},
		{"owner listing, split and deletion", func(t *testing.T, db *DB, v Versions, raw func(string) string) {
			if err := update(t, db, func(tx *Tx) error {
				for _, m := range []string{"B", "A", "M"} {
					if err := v.Put(tx, "user:a", m, []byte(m)); err != nil {
						return err
					}
					if _, err := v.KeepPrior(tx, "user:a", m, t0, value("p"+m)); err != nil {
						return err
					}
				}
				return v.Put(tx, "user:ab", "A", []byte("other"))
			}); err != nil {
				t.Fatal(err)
			}
			var methods []string
			if err := db.View(context.Background(), func(tx *Tx) error {
				return v.ForEachCurrent(tx, "user:a", func(m string, _ []byte) error { methods = append(methods, m); return nil })
			}); err != nil || fmt.Sprint(methods) != "[A B M]" {
				t.Fatalf("ForEachCurrent = %v, %v", methods, err)
			}
			o, m, id, ok := v.SplitKey([]byte(raw(VersionID(t0))))
			if !ok || o != "user:a" || m != "M" || id != VersionID(t0) {
				t.Fatalf("SplitKey(prior) = %q %q %q %v", o, m, id, ok)
			}
			if o, m, id, ok := v.SplitKey(Key("user:a", "M")); !ok || o != "user:a" || m != "M" || id != "" {
				t.Fatalf("SplitKey(current) = %q %q %q %v", o, m, id, ok)
			}
			var n int
			if err := update(t, db, func(tx *Tx) (err error) { n, err = v.DeleteOwner(tx, "user:a"); return }); err != nil || n != 3 {
				t.Fatalf("DeleteOwner = %d, %v", n, err)
			}
			if len(list(t, db, v, "user:a", "M")) != 0 {
				t.Fatal("DeleteOwner kept prior versions")
			}
			if err := db.View(context.Background(), func(tx *Tx) error { _, err := v.Get(tx, "user:ab", "A"); return err }); err != nil {
				t.Fatalf("DeleteOwner touched another owner: %v", err)
			}
		}},
		{"a damaged id is an error, not a silent skip", func(t *testing.T, db *DB, v Versions, raw func(string) string) {
			if err := update(t, db, func(tx *Tx) error { return tx.Put(v.PriorBucket, []byte(raw("12")), []byte("x")) }); err != nil {
				t.Fatal(err)
			}
			err := db.View(context.Background(), func(tx *Tx) error {
				return v.List(tx, "user:a", "M", func(string, time.Time, []byte) error { return nil })
			})
			if err == nil {
				t.Fatal("damaged id listed without error")
			}
		}},
	}
	for _, l := range layouts {
		for _, c := range cases {
			t.Run(l.name+"/"+c.name, func(t *testing.T) {
				c.run(t, openTemp(t), l.v(hour), l.raw)
			})
		}
	}
}
