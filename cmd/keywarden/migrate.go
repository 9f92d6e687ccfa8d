package main

// keywarden store migrate -to etcd|bbolt [-config FILE] [-dev] [-dest-config FILE] [-db FILE] [-force]
//
// copies the configured store (the source: store.backend of -config) into
// the other backend, offline (stop the node first). The destination is
// configured like the source would be: by -dest-config FILE (a second
// configuration file: its etcd section, or its data.dir's store file), or
// else by the same configuration's other section (fill in the etcd section
// before you switch store.backend to etcd; the bbolt file under data.dir
// when you move back); -db FILE names another bbolt file. Records are
// copied as they are (sealed values stay sealed: no TPM is needed), then
// both sides are counted per bucket and hashed, and the two summaries must
// match. A destination that holds records is refused unless -force (its
// records are then removed first). The source is opened read-only and
// never changed.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

// migrateTxTimeout bounds the source's one read transaction and each
// write batch on etcd during a migration (a serving node's bound, 10 s, is
// too short to read a whole large store).
const migrateTxTimeout = 30 * time.Minute

// cmdStore: `store migrate`.
func cmdStore(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "migrate" {
		return usageError("store: want `store migrate -to etcd|bbolt`")
	}
	return cmdStoreMigrate(ctx, args[1:], os.Stdout)
}

// migrateFlags are store migrate's command line.
type migrateFlags struct {
	lifecycle  *lifecycleFlags
	to         string
	destConfig string
	db         string
	force      bool
}

func parseMigrateFlags(args []string) (*migrateFlags, error) {
	fs, lf := newFlagSet("store migrate")
	f := &migrateFlags{lifecycle: lf}
	fs.StringVar(&f.to, "to", "", "destination backend: etcd or bbolt (required)")
	fs.StringVar(&f.destConfig, "dest-config", "", "configuration file of the destination (default: -config's own etcd section or data.dir)")
	fs.StringVar(&f.db, "db", "", "with -to bbolt: the destination store file (default: the destination configuration's data.dir/keywarden.db)")
	fs.BoolVar(&f.force, "force", false, "replace the records of a destination that holds some")
	if err := fs.Parse(args); err != nil {
		return nil, usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return nil, usageError("store migrate: unexpected argument " + fs.Arg(0))
	}
	if f.to != "etcd" && f.to != "bbolt" {
		return nil, usageError("store migrate: -to etcd or -to bbolt is required")
	}
	if f.db != "" && f.to != "bbolt" {
		return nil, usageError("store migrate: -db names a bbolt destination; it goes with -to bbolt")
	}
	return f, nil
}

func cmdStoreMigrate(ctx context.Context, args []string, out io.Writer) error {
	f, err := parseMigrateFlags(args)
	if err != nil {
		return err
	}
	src, err := f.lifecycle.load()
	if err != nil {
		return err
	}
	if storeOnEtcd(src) == (f.to == "etcd") {
		return fmt.Errorf("store migrate: the configured store is already on %s (store.backend: %s); -to names the other backend", f.to, src.Store.Backend)
	}
	dst := src
	if f.destConfig != "" {
		if dst, _, err = loadConfig([]string{"-config", f.destConfig}, f.lifecycle.dev); err != nil {
			return fmt.Errorf("store migrate: -dest-config: %w", err)
		}
	}
	dst.Store.Backend = f.to
	if f.db != "" {
		dst.Data.DB = f.db
	}
	if f.to == "etcd" {
		// The etcd section is checked only when it is the chosen backend:
		// check it now as the destination's.
		if err := dst.Validate(); err != nil {
			return fmt.Errorf("store migrate: the destination: %w", err)
		}
		if err := checkStore(dst); err != nil {
			return fmt.Errorf("store migrate: the destination: %w", err)
		}
	}

	sdb, err := openMigrateDB(ctx, src, true)
	if err != nil {
		return fmt.Errorf("store migrate: the source (stop the node first): %w", err)
	}
	defer sdb.Close()
	ddb, err := openMigrateDB(ctx, dst, false)
	if err != nil {
		return fmt.Errorf("store migrate: the destination: %w", err)
	}
	defer ddb.Close()

	batch := 100
	if f.to == "etcd" {
		batch = min(batch, etcdBatchOps)
	}
	start := time.Now()
	rep, err := store.Copy(ctx, ddb, sdb, store.CopyOptions{Replace: f.force, BatchRecords: batch, BatchBytes: dst.Etcd.MaxRequestBytes / 3})
	if errors.Is(err, store.ErrNotEmpty) {
		return fmt.Errorf("store migrate: the destination %s holds records (%w); add -force to replace them", storeName(dst), err)
	}
	if err != nil {
		return fmt.Errorf("store migrate: %w", err)
	}
	elapsed := time.Since(start)
	printMigrateReport(out, src, dst, rep, elapsed)
	if err := ddb.Close(); err != nil {
		return fmt.Errorf("store migrate: close the destination: %w", err)
	}
	return nil
}

// etcdBatchOps keeps one copy transaction under etcd's default
// --max-txn-ops (128), whatever the cluster was started with.
const etcdBatchOps = 100

// openMigrateDB opens cfg's store: the source read-only (never migrated
// or written), the destination read-write (created and migrated to this
// build's schema when new). On etcd, transactions may run up to
// migrateTxTimeout.
func openMigrateDB(ctx context.Context, cfg config.Config, readOnly bool) (*store.DB, error) {
	opts := store.Options{ReadOnly: readOnly, Timeout: 2 * time.Second}
	if !storeOnEtcd(cfg) {
		if readOnly {
			if _, err := os.Stat(cfg.Data.DB); err != nil {
				return nil, fmt.Errorf("store: %w", err)
			}
		}
		return store.Open(cfg.Data.DB, opts)
	}
	eopts, err := etcdOptions(cfg)
	if err != nil {
		return nil, err
	}
	eopts.TxTimeout = migrateTxTimeout
	b, err := etcdstore.Open(ctx, eopts)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(eopts.Endpoints, ","), err)
	}
	db, err := store.New(b, opts)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("etcd prefix %q: %w", b.Prefix(), err)
	}
	return db, nil
}

// storeOnEtcd reports whether cfg's store is in etcd (the one place
// migrate and recover decide it).
func storeOnEtcd(cfg config.Config) bool { return cfg.Store.Backend == "etcd" }

// storeName names a store for messages: its file, or its etcd endpoints
// and prefix.
func storeName(cfg config.Config) string {
	if storeOnEtcd(cfg) {
		return fmt.Sprintf("etcd %s prefix %q", strings.Join(cfg.Etcd.Endpoints, ","), cfg.Etcd.Prefix)
	}
	return cfg.Data.DB
}

// printMigrateReport prints both sides' counts and digests and the meta
// keys copied.
func printMigrateReport(w io.Writer, src, dst config.Config, rep store.CopyReport, elapsed time.Duration) {
	fmt.Fprintf(w, "source:      %s\ndestination: %s\n", storeName(src), storeName(dst))
	if rep.Cleared > 0 {
		fmt.Fprintf(w, "replaced:    %d records removed from the destination first (-force)\n", rep.Cleared)
	}
	fmt.Fprintf(w, "%-16s %10s %10s\n", "bucket", "source", "dest")
	for _, b := range store.Buckets() {
		fmt.Fprintf(w, "%-16s %10d %10d\n", b, rep.Source.Counts[b], rep.Destination.Counts[b])
	}
	fmt.Fprintf(w, "%-16s %10d %10d\n", "total", rep.Source.Total, rep.Destination.Total)
	fmt.Fprintf(w, "sha256 source:      %x\nsha256 destination: %x\n", rep.Source.SHA256, rep.Destination.SHA256)
	rate := float64(rep.Source.Total) / max(elapsed.Seconds(), 1e-6)
	fmt.Fprintf(w, "copied and verified %d records in %s (%.0f records/s)\n", rep.Source.Total, elapsed.Round(time.Millisecond), rate)
	fmt.Fprintf(w, "meta keys copied as they were: %s\n", strings.Join(metaKeyNames(), ", "))
	fmt.Fprintf(w, "next: set store.backend: %s (and its section) in the configuration, then start the node\n", dst.Store.Backend)
}

func metaKeyNames() []string {
	var names []string
	for _, k := range store.MetaKeys() {
		names = append(names, string(k))
	}
	return names
}
