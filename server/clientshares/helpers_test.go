package clientshares

import (
	"context"
	"testing"
	"time"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/apptest/appserver"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
)

const testAdminKey = apptest.AdminKey

// env is the real server on loopback (apptest: simulator-sealed root key,
// bbolt, audit log) with this package's routes.
type env struct {
	*appserver.App
	t     *testing.T
	store *Store
	now   time.Time
}

type envOpt func(*config.Config, *Options)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	v := &env{t: t, now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	v.App = appserver.New(t, appserver.Core(apptest.Seed(11)), appserver.Before(func(a *appserver.App, o *server.Options) {
		so := Options{DB: a.DB, Root: a.Root, Clock: func() time.Time { return v.now }}
		for _, f := range opts {
			f(&o.Config, &so)
		}
		st, err := New(so)
		if err != nil {
			t.Fatal(err)
		}
		v.store = st
		h, err := NewHandler(st, a.Audit)
		if err != nil {
			t.Fatal(err)
		}
		o.ClientShares, o.Users = h, append(o.Users, h)
	}))
	return v
}

var want = apptest.Want

// rawBucket returns every key and value of BucketClientShares.
func (v *env) rawBucket() map[string][]byte {
	v.t.Helper()
	out := map[string][]byte{}
	err := v.DB.View(context.Background(), func(tx *store.Tx) error {
		return tx.ForEach(store.BucketClientShares, nil, func(k, val []byte) error {
			out[string(k)] = append([]byte(nil), val...)
			return nil
		})
	})
	if err != nil {
		v.t.Fatal(err)
	}
	return out
}

func sharePath(user, method string) string {
	return "/v1/admin/users/" + user + "/client-shares/" + method
}

// versionsSub is the key part of prior versions in the stored layout
// (store.ClientShareVersions), written out here so that tests which plant
// raw records also pin the format.
const versionsSub = "versions"

func versionID(t time.Time) string { return store.VersionID(t) }
