package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/audit"
	"github.com/keywarden/keywarden/internal/config"
	"github.com/keywarden/keywarden/internal/secret"
	"github.com/keywarden/keywarden/server"
	"github.com/keywarden/keywarden/store"
	"github.com/keywarden/keywarden/store/etcdstore"
)

func cmdConfigCheck(args []string) error {
	dev := false
	rest := args[:0]
	for _, a := range args {
		if a == "-dev" || a == "--dev" {
			dev = true
			continue
		}
		rest = append(rest, a)
	}
	cfg, _, err := loadConfig(rest, dev)
	if err != nil {
		return err
	}
	fmt.Println(cfg.Dump())
	fmt.Fprintln(os.Stderr, "configuration is valid")
	return nil
}

func cmdAdminKeyHash() error {
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	key := strings.TrimSpace(line)
	if len(key) < 16 {
		return errors.New("an admin API key must be at least 16 characters")
	}
	fmt.Println(server.HashAdminKey(key))
	return nil
}

// cmdInit creates the root key and seals it to the configured TPM. What
// it does, in this order: check the recovery settings (before any root key
// exists) → open the TPM → open the store → create the root key and seal
// it → define the rollback counter → split the root key into recovery
// shares → make the attestation key.
func cmdInit(ctx context.Context, args []string) error {
	var flags initFlagValues
	cfg, _, err := loadConfig(args, false, flags.register)
	if err != nil {
		return err
	}
	if cfg.Store.Backend == "embedded" {
		return errors.New("init: with store.backend: embedded run `keywarden cluster init` on the first node (it also bootstraps the node's etcd member)")
	}
	settings := recoverySettingsFor(cfg, flags)
	if err := preflightInit(settings); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Data.Dir, 0o700); err != nil {
		return err
	}
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return err
	}
	defer tpm.Close()
	db, err := openStoreDB(ctx, cfg, store.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	root, raw, err := enclave.Initialize(ctx, tpm, db, enclave.InitOptions{PCRs: cfg.TPM.PCRs})
	if err != nil {
		return err
	}
	defer root.Close()
	defer raw.Wipe()
	c := initContext{cfg: cfg, tpm: tpm, db: db, root: root, raw: raw}
	if err := rollbackInitStep(ctx, c); err != nil {
		return err
	}
	if err := recoveryInitStep(ctx, c, settings); err != nil {
		return err
	}
	if err := initAttestationKey(ctx, c); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "root key created and sealed to %s (PCRs %v)\n", cfg.TPM.Path, cfg.TPM.PCRs)
	if len(cfg.TPM.PCRs) == 0 {
		fmt.Fprintln(os.Stderr, "WARNING: no PCR policy (tpm.allow_no_pcr_policy): the root key is bound to this TPM only; `keywarden status` flags it")
	}
	return nil
}

// initContext is what init's steps (and recover's) work on.
type initContext struct {
	cfg  config.Config
	tpm  transport.TPM
	db   *store.DB
	root *enclave.Root
	raw  secret.Bytes
}

// cmdBackup asks the running server for a consistent copy of the store
// (bbolt's lock keeps a second process from reading the live file).
func cmdBackup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	out := fs.String("out", "", "file to write")
	api := adminFlags(fs)
	verify := fs.String("verify", "", "check a backup FILE instead: its root key unseals on this TPM and every key record opens")
	cfgPath := fs.String("config", os.Getenv("KEYWARDEN_CONFIG"), "configuration file (for -verify: the TPM)")
	dev := fs.Bool("dev", false, "with -verify: use dev mode's simulated TPM")
	etcdSnap := fs.String("etcd-snapshot", "", "write etcd's own snapshot of a member to FILE instead (a server on etcd; for `etcdutl snapshot restore` of the whole cluster)")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if *verify != "" {
		return verifyBackup(ctx, *verify, *cfgPath, *dev)
	}
	if *etcdSnap != "" {
		if *out != "" {
			return usageError("backup: -out and -etcd-snapshot are two different backups; ask for one at a time")
		}
		return downloadEtcdSnapshot(ctx, api, *etcdSnap)
	}
	if *out == "" {
		return usageError("backup: -out FILE is required")
	}
	resp, err := api.do(ctx, http.MethodGet, "/v1/admin/backup", 10*time.Minute)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("backup: server answered %s: %s", resp.Status, b)
	}
	tmp := *out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	if err := checkBackupFile(*out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "backup: %d bytes written to %s\n", n, *out)
	return nil
}

// checkBackupFile checks that a downloaded backup is whole: a bbolt copy
// opens as a store; a server on etcd streams its records as an etcd dump,
// whose record count and checksum are checked.
func checkBackupFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 16)
	n, _ := io.ReadFull(f, head)
	if etcdstore.IsDump(head[:n]) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		info, err := etcdstore.ReadDump(f, func(_, _ []byte) error { return nil })
		if err != nil {
			return fmt.Errorf("backup written but is damaged: %w", err)
		}
		fmt.Fprintf(os.Stderr, "backup: etcd dump of %d records (revision %d), checksum verified\n", info.Records, info.Revision)
		return nil
	}
	db, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("backup written but does not open: %w", err)
	}
	return db.Close()
}

// adminAPI is how a command reaches the running server's admin listener:
// its flags (-url, -cacert, -server-name, -cert, -key), shared by backup,
// status and keys.
type adminAPI struct {
	url, caFile, serverName, certFile, keyFile *string
}

// adminFlags adds the admin listener's flags to fs.
func adminFlags(fs *flag.FlagSet) *adminAPI {
	return &adminAPI{
		url:        fs.String("url", envOr("KEYWARDEN_ADMIN_URL", "http://127.0.0.1:8421"), "admin listener URL"),
		caFile:     fs.String("cacert", "", "CA certificate (PEM) that signed the admin listener's TLS certificate"),
		serverName: fs.String("server-name", "", "TLS server name to verify (when -url names 127.0.0.1 but the certificate names the public host)"),
		certFile:   fs.String("cert", "", "client certificate (PEM) when listen.admin_client_ca is set"),
		keyFile:    fs.String("key", "", "client certificate's key (PEM)"),
	}
}

// do sends method path with the admin API key, bounded by timeout.
func (a *adminAPI) do(ctx context.Context, method, path string, timeout time.Duration) (*http.Response, error) {
	key, hc, err := adminClient(*a.caFile, *a.serverName, *a.certFile, *a.keyFile, timeout)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(*a.url, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	return hc.Do(req)
}

// adminClient reads the admin API key (KEYWARDEN_ADMIN_KEY or
// KEYWARDEN_ADMIN_KEY_FILE) and builds the HTTP client of the commands
// that talk to the running server's admin listener.
func adminClient(caFile, serverName, certFile, keyFile string, timeout time.Duration) (string, *http.Client, error) {
	key := os.Getenv("KEYWARDEN_ADMIN_KEY")
	if p := os.Getenv("KEYWARDEN_ADMIN_KEY_FILE"); key == "" && p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", nil, fmt.Errorf("KEYWARDEN_ADMIN_KEY_FILE: %w", err)
		}
		key = strings.TrimSpace(string(b))
	}
	if key == "" {
		return "", nil, errors.New("set KEYWARDEN_ADMIN_KEY or KEYWARDEN_ADMIN_KEY_FILE to an admin API key")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return "", nil, fmt.Errorf("-cacert: %w", err)
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
			return "", nil, errors.New("-cacert: no PEM certificate in the file")
		}
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return "", nil, fmt.Errorf("client certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{c}
	}
	return key, &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tlsCfg}}, nil
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

// cmdAuditVerify checks the audit chain. The anchor key is a root-key
// subkey, so it needs the TPM and the store (stop the server, or run it on
// a copy made by `keywarden backup`: -db).
// cmdAuditVerifyHMAC is `keywarden audit verify -hmac`: a stopped node's
// check with its TPM and store (HMAC anchors and the recorded head).
func cmdAuditVerifyHMAC(args []string) error {
	cfg, fs, err := loadConfig(args, os.Getenv("KEYWARDEN_DEV") == "1")
	if err != nil {
		return err
	}
	_ = fs
	ctx := context.Background()
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return err
	}
	defer tpm.Close()
	db, err := openStoreDB(ctx, cfg, store.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	root, err := enclave.Unseal(ctx, tpm, db)
	if err != nil {
		return err
	}
	defer root.Close()
	// The head recorded in the store at each anchor: a log that ends
	// before it was cut back.
	head, err := audit.StoreHeads(db).LoadHead(ctx)
	if err != nil {
		return fmt.Errorf("reading the recorded audit head: %w", err)
	}
	rep, err := audit.VerifyHead(cfg.Audit.Dir, root.Subkey(enclave.SubkeyAuditAnchor), head)
	fmt.Printf("audit log %s: %d lines (seq %d..%d) in %d files, %d anchors\n", cfg.Audit.Dir, rep.Lines, rep.FirstSeq, rep.LastSeq, len(rep.Files), rep.Anchors)
	switch {
	case rep.Recorded != nil:
		fmt.Printf("recorded head: %s\n", rep.Recorded)
	case head == nil:
		fmt.Println("no recorded head in the store: a log cut back to an earlier anchor cannot be told from a complete one")
	}
	if rep.LastAnchor != nil {
		fmt.Printf("last anchor: %s\n", rep.LastAnchor)
	}
	for _, in := range rep.Incidents {
		fmt.Printf("incident: %+v\n", in)
	}
	if rep.Broken != nil {
		fmt.Printf("FIRST BROKEN ENTRY: %s\n", rep.Broken)
	}
	if err == nil {
		if rep.Recorded != nil {
			fmt.Println("chain, anchors and recorded head verify")
		} else {
			fmt.Println("chain and anchors verify")
		}
	}
	return err
}

// verifyBackup opens a backup read-only and checks, with this host's TPM,
// that its root key unseals and every key record opens.
func verifyBackup(ctx context.Context, file, cfgPath string, dev bool) error {
	args := []string{}
	if cfgPath != "" {
		args = append(args, "-config", cfgPath)
	}
	cfg, _, err := loadConfig(args, dev)
	if err != nil {
		return err
	}
	db, format, err := openBackupFile(file)
	if err != nil {
		return fmt.Errorf("backup -verify %s: %w", file, err)
	}
	defer db.Close()
	tpm, err := openTPM(ctx, cfg)
	if err != nil {
		return err
	}
	defer tpm.Close()
	rep, err := enclave.VerifyBackup(ctx, tpm, db)
	if err != nil {
		return fmt.Errorf("backup -verify %s: %w", file, err)
	}
	fmt.Printf("backup %s verifies: %s, root key unseals on this TPM, %d key records open, rollback record verified: %v\n", file, format, rep.Keys, rep.Rollback)
	return nil
}

// openBackupFile opens a backup read-only as a store: a bbolt file as it
// is, an etcd dump loaded in memory once its record count and checksum
// check. format describes it for the operator.
func openBackupFile(file string) (db *store.DB, format string, err error) {
	head, err := readHead(file, 16)
	if err != nil {
		return nil, "", err
	}
	if !etcdstore.IsDump(head) {
		db, err := store.Open(file, store.Options{ReadOnly: true, Timeout: 2 * time.Second})
		return db, "bbolt store file", err
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	d, err := etcdstore.LoadDump(bufio.NewReader(f))
	if err != nil {
		return nil, "", err
	}
	db, err = store.New(d, store.Options{ReadOnly: true})
	if err != nil {
		return nil, "", fmt.Errorf("etcd dump: %w", err)
	}
	info := d.Info()
	return db, fmt.Sprintf("etcd dump of revision %d (%d keys, checksum verified)", info.Revision, info.Records), nil
}

// readHead reads up to n bytes from the start of a file.
func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := io.ReadFull(f, b)
	if err != nil && m == 0 {
		return nil, err
	}
	return b[:m], nil
}
