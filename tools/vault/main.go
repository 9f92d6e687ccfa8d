// Command vault is the unmodified HashiCorp Vault CLI and server, built from
// the github.com/hashicorp/vault module for Keywarden's integration tests.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
