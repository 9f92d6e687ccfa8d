package portal_test

import (
	"fmt"

	"github.com/keywarden/keywarden/server/portal"
)

// Portal's answer to GET /api/v3/clients/me names the client and its
// custodian; the adapter accepts only the configured custodian's clients.
func ExampleParseClient() {
	c, err := portal.ParseClient([]byte(`{"id":"clx0abc123","custodian":{"id":"cust-1","name":"Acme"},"wallets":[]}`))
	fmt.Println(c.ID, c.CustodianID, err)
	_, err = portal.ParseClient([]byte(`{"custodian":{"id":"cust-1"}}`))
	fmt.Println(err != nil)
	// Output:
	// clx0abc123 cust-1 <nil>
	// true
}

// A credential's shape is checked before any look-up: garbage never costs
// a call to Portal.
func ExampleCheckCredential() {
	fmt.Println(portal.CheckCredential("pk_live_0123456789"))
	fmt.Println(portal.CheckCredential("has a space"))
	// Output:
	// <nil>
	// portal_credential_invalid: the Portal client credential is malformed
}

// Every record of a Portal client (passkeys, their key, custodian shares)
// belongs to this owner.
func ExampleClientOwner() {
	fmt.Println(portal.ClientOwner("clx0abc123"))
	// Output: portal:clx0abc123
}
