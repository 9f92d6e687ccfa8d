// Command keywarden is the Keywarden key-enclave appliance.
//
//	keywarden serve   [-config FILE]   run the appliance (real TPM)
//	keywarden dev                      run on embedded defaults: simulated TPM, ./keywarden-data, 127.0.0.1:8420
//	keywarden init    [-config FILE]   create the root key and seal it to the TPM
//	keywarden cluster init|status|remove   the embedded etcd cluster (store.backend: embedded)
//	keywarden config check [-config FILE]
//	keywarden backup  -out FILE        consistent copy of the live store (through the running server's admin API)
//	keywarden store migrate -to etcd|bbolt   copy the store into the other backend (offline), count and hash both sides
//	keywarden status                   the running server's readiness with details (admin API)
//	keywarden audit verify [DIR|FILE…] [-key FILE | -url URL] [-ak-name HEX] [-complete]
//	keywarden audit verify -hmac [-config FILE]   a stopped node's check with its TPM and store
//	keywarden receipt verify FILE [-key FILE | -url URL] [-owner ID] [-audit DIR]
//	keywarden admin-key hash           read a key on stdin, print its configured form
//	keywarden recover | reseal | recovery | rollback | attest | cluster   see `keywarden help`
//	keywarden version
//
// Every setting also comes from the environment (KEYWARDEN_…); see README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "keywarden:", err)
			fmt.Fprintln(os.Stderr, usage())
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "keywarden:", err)
		os.Exit(1)
	}
}

type usageError string

func (u usageError) Error() string { return string(u) }

// command is one entry of the command table: its name (and aliases), the
// line `keywarden help` prints for it, and the function that runs it.
type command struct {
	names []string
	help  string // "" for aliases shown elsewhere (version's flags)
	run   func(ctx context.Context, args []string) error
}

// commands is every command of keywarden, in the order help lists them.
// Nothing adds itself to it: a new command is a new line here.
func commands() []command {
	return []command{
		{names: []string{"serve"}, help: "run the appliance (-config FILE)", run: cmdServe},
		{names: []string{"dev"}, help: "run on embedded defaults with a simulated TPM (insecure; for trying it out)", run: cmdDev},
		{names: []string{"init"}, help: "create the root key and seal it to the TPM (-config FILE)", run: cmdInit},
		{names: []string{"cluster"}, help: "init | status | remove NAME|ID | join URL | joins | approve ID | refuse ID: the embedded etcd cluster (store.backend: embedded) and its attested join", run: cmdCluster},
		{names: []string{"config"}, help: "load and validate the configuration, print it with secrets redacted", run: cmdConfig},
		{names: []string{"backup"}, help: "write a consistent copy of the live store (-out FILE; asks the running server)", run: cmdBackup},
		{names: []string{"store"}, help: "migrate -to etcd|bbolt: copy the store into the other backend and verify it (offline)", run: cmdStore},
		{names: []string{"status"}, help: "the running server's readiness with every check's detail (admin API)", run: cmdStatus},
		{names: []string{"keys"}, help: "versions | restore OWNER METHOD [ID]: prior versions of any owner's key (admin API)", run: cmdKeys},
		{names: []string{"audit"}, help: "check the audit log's chain and signed anchors with public keys ([DIR|FILE…] -key FILE | -url URL; -hmac: a stopped node's check with its TPM)", run: cmdAudit},
		{names: []string{"receipt"}, help: "check a release receipt with public keys (FILE -key FILE | -url URL [-owner ID] [-audit DIR])", run: cmdReceipt},
		{names: []string{"admin-key"}, help: "read an admin API key on stdin and print its sha256 form for admin.key_hashes", run: cmdAdminKey},
		{names: []string{"recover"}, help: "rebuild the root key from T recovery shares and a backup on a new TPM", run: cmdRecover},
		{names: []string{"reseal"}, help: "seal the root key again to other PCRs (before a firmware update)", run: cmdReseal},
		{names: []string{"recovery"}, help: "status | reshare: the recovery shares of the root key", run: cmdRecovery},
		{names: []string{"rollback"}, help: "accept: start from a deliberately restored older store (audited)", run: cmdRollback},
		{names: []string{"attest"}, help: "verify | policy | ak-name: check a running appliance with TPM attestation", run: cmdAttest},
		{names: []string{"vault"}, help: "csr | verify-csr: the TPM-resident Vault client key's certificate request (vault.auth tpm-cert)", run: cmdVault},
		{names: []string{"version", "-version", "--version"}, help: "print the version", run: cmdVersion},
		{names: []string{"help", "-h", "--help"}, run: cmdHelp},
	}
}

// usage is the help text, made from the command table.
func usage() string {
	var b strings.Builder
	b.WriteString("usage: keywarden <command> [flags]")
	for _, c := range commands() {
		if c.help == "" {
			continue
		}
		fmt.Fprintf(&b, "\n  %-14s %s", usageName(c.names[0]), c.help)
	}
	return b.String()
}

// usageName is how help names a command that wants a sub-command.
func usageName(name string) string {
	switch name {
	case "config":
		return "config check"
	case "audit":
		return "audit verify"
	case "receipt":
		return "receipt verify"
	case "admin-key":
		return "admin-key hash"
	case "cluster":
		return "cluster …"
	case "store":
		return "store migrate"
	}
	return name
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("no command")
	}
	name, rest := args[0], args[1:]
	if benchNoReceipts && name != "dev" {
		return errors.New("this is a benchmark build without receipts (tag bench_noreceipts): it runs only `keywarden dev`")
	}
	for _, c := range commands() {
		if slices.Contains(c.names, name) {
			return c.run(ctx, rest)
		}
	}
	return usageError("unknown command " + name)
}

func cmdVersion(context.Context, []string) error {
	fmt.Println(versionString())
	return nil
}

func cmdHelp(context.Context, []string) error {
	fmt.Println(usage())
	return nil
}

func cmdConfig(_ context.Context, args []string) error {
	if len(args) == 0 || args[0] != "check" {
		return usageError("config: want `config check`")
	}
	return cmdConfigCheck(args[1:])
}

func cmdAudit(_ context.Context, args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		return usageError("audit: want `audit verify`")
	}
	return cmdAuditVerify(args[1:])
}

func cmdAdminKey(_ context.Context, args []string) error {
	if len(args) == 0 || args[0] != "hash" {
		return usageError("admin-key: want `admin-key hash`")
	}
	return cmdAdminKeyHash()
}
