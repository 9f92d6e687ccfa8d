package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"text/tabwriter"
	"time"
)

const keysUsage = `usage: keywarden keys versions [flags] OWNER METHOD
       keywarden keys restore  [flags] OWNER METHOD VERSION_ID
  OWNER is user:<userId>, firebase:<project>/<tenant>/<uid> (tenant empty when none)
  or portal:<clientId>; METHOD is e.g. PASSKEY, FIREBASE, or with -custodian a
  custodian share's backup method. Asks the running node's admin API
  (KEYWARDEN_ADMIN_KEY or KEYWARDEN_ADMIN_KEY_FILE, -url or KEYWARDEN_ADMIN_URL).`

// cmdKeys lists and restores prior versions of any owner's key (or, with
// -custodian, custodian share) through the running node's admin API
// (/v1/admin/owners/{owner}/…).
func cmdKeys(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "versions" && args[0] != "restore") {
		return usageError(keysUsage)
	}
	sub := args[0]
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	api := adminFlags(fs)
	custodianShares := fs.Bool("custodian", false, "act on the owner's custodian shares instead of its keys")
	asJSON := fs.Bool("json", false, "print the server's answer as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err.Error())
	}
	pos := fs.Args()
	if (sub == "versions" && len(pos) != 2) || (sub == "restore" && len(pos) != 3) {
		return usageError(keysUsage)
	}
	owner, method := pos[0], pos[1]
	kind := "keys"
	if *custodianShares {
		kind = "custodian-shares"
	}
	path := "/v1/admin/owners/" + url.PathEscape(owner) + "/" + kind + "/" + url.PathEscape(method) + "/versions"
	httpMethod := http.MethodGet
	if sub == "restore" {
		path += "/" + url.PathEscape(pos[2]) + "/restore"
		httpMethod = http.MethodPost
	}
	resp, err := api.do(ctx, httpMethod, path, 30*time.Second)
	if err != nil {
		return fmt.Errorf("keys %s: %w", sub, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("keys %s: %w", sub, serverError(resp, b))
	}
	if sub == "restore" {
		what := "key"
		if *custodianShares {
			what = "custodian share"
		}
		fmt.Printf("restored version %s of the %s %s of %s; the value it replaced is kept as a prior version\n", pos[2], method, what, owner)
		return nil
	}
	if *asJSON {
		fmt.Println(string(b))
		return nil
	}
	var vs struct {
		Versions []struct {
			ID         string    `json:"id"`
			ReplacedAt time.Time `json:"replacedAt"`
			CreatedAt  time.Time `json:"createdAt"`
		} `json:"versions"`
	}
	if err := json.Unmarshal(b, &vs); err != nil {
		return fmt.Errorf("keys versions: the server's answer is not a version list: %w", err)
	}
	if len(vs.Versions) == 0 {
		fmt.Printf("no prior versions of the %s %s of %s\n", method, kind, owner)
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tREPLACED AT\tCREATED AT")
	for _, v := range vs.Versions {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.ID, v.ReplacedAt.UTC().Format(time.RFC3339), v.CreatedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// serverError is an admin API refusal as "<status> <code>: <message>".
func serverError(resp *http.Response, body []byte) error {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
		return fmt.Errorf("server answered %d %s: %s", resp.StatusCode, e.Error.Code, e.Error.Message)
	}
	return fmt.Errorf("server answered %s: %.512s", resp.Status, body)
}
