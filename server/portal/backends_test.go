package portal

import (
	"testing"

	"github.com/keywarden/keywarden/internal/testutil/apptest"
	"github.com/keywarden/keywarden/internal/testutil/etcddev"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// onEveryBackend runs test on the appliance over each store backend: the
// bbolt file and a one-member etcd embedded in the test process.
func onEveryBackend(t *testing.T, test func(t *testing.T, core []apptest.CoreOption)) {
	t.Run("bbolt", func(t *testing.T) { test(t, nil) })
	t.Run("etcd", func(t *testing.T) {
		c := etcddev.Embedded(t)
		test(t, []apptest.CoreOption{apptest.StoreBackend(func(tb testing.TB) store.Backend { return c.Backend(tb, etcdstore.Options{}) })})
	})
}
