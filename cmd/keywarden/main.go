// Command keywarden is the Keywarden key-enclave appliance.
//
//	keywarden serve   [-config FILE]   run the appliance (real TPM)
//	keywarden dev                      run on embedded defaults: simulated TPM, ./keywarden-data, 127.0.0.1:8420
//	keywarden init    [-config FILE]   create the root key and seal it to the TPM
//	keywarden config check [-config FILE]
//	keywarden backup  -out FILE        consistent copy of the live store (through the running server's admin API)
//	keywarden status                   the running server's readiness with details (admin API)
//	keywarden audit verify [-dir DIR]
//	keywarden admin-key hash           read a key on stdin, print its configured form
//	keywarden recover | reseal | recovery | rollback | attest   see `keywarden help`
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
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "keywarden:", err)
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "keywarden:", err)
		os.Exit(1)
	}
}

type usageError string

func (u usageError) Error() string { return string(u) }

const usage = `usage: keywarden <command> [flags]
  serve          run the appliance (-config FILE)
  dev            run on embedded defaults with a simulated TPM (insecure; for trying it out)
  init           create the root key and seal it to the TPM (-config FILE)
  config check   load and validate the configuration, print it with secrets redacted
  backup         write a consistent copy of the live store (-out FILE; asks the running server)
  status         the running server's readiness with every check's detail (admin API)
  keys           versions | restore OWNER METHOD [ID]: prior versions of any owner's key (admin API)
  audit verify   check the audit log's hash chain and anchors
  admin-key hash read an admin API key on stdin and print its sha256 form for admin.key_hashes
  recover        rebuild the root key from T recovery shares and a backup on a new TPM
  reseal         seal the root key again to other PCRs (before a firmware update)
  recovery       status | reshare: the recovery shares of the root key
  rollback       accept: start from a deliberately restored older store (audited)
  attest         verify | policy | ak-name: check a running appliance with TPM attestation
  version        print the version`

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("no command")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, false)
	case "dev":
		return cmdServe(ctx, rest, true)
	case "init":
		return cmdInit(ctx, rest)
	case "config":
		if len(rest) == 0 || rest[0] != "check" {
			return usageError("config: want `config check`")
		}
		return cmdConfigCheck(rest[1:])
	case "backup":
		return cmdBackup(ctx, rest)
	case "audit":
		if len(rest) == 0 || rest[0] != "verify" {
			return usageError("audit: want `audit verify`")
		}
		return cmdAuditVerify(rest[1:])
	case "admin-key":
		if len(rest) == 0 || rest[0] != "hash" {
			return usageError("admin-key: want `admin-key hash`")
		}
		return cmdAdminKeyHash()
	case "version", "-version", "--version":
		fmt.Println(versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Println(usage)
		return nil
	}
	if extra, ok := extraCommands[cmd]; ok {
		return extra(ctx, rest)
	}
	return usageError("unknown command " + cmd)
}

// extraCommands are added by other files of this package (attest, recover …).
var extraCommands = map[string]func(context.Context, []string) error{}
