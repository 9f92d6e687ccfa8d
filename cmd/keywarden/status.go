package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"time"
)

// statusReport is GET /v1/admin/readyz's answer.
type statusReport struct {
	Status string `json:"status"`
	Checks map[string]struct {
		Status string `json:"status"`
		Detail string `json:"detail"`
	} `json:"checks"`
}

// cmdStatus prints the running server's readiness with every check's
// detail, read from the admin API (the public /readyz shows statuses
// only). It fails when the node is not ready.
func cmdStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	api := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	resp, err := api.do(ctx, http.MethodGet, "/v1/admin/readyz", 30*time.Second)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var r statusReport
	if (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable) || json.Unmarshal(b, &r) != nil || r.Status == "" {
		return fmt.Errorf("status: server answered %s: %.4096s", resp.Status, b)
	}
	if *asJSON {
		fmt.Println(string(b))
	} else {
		printStatus(os.Stdout, r)
	}
	if r.Status != "ready" {
		return errors.New("status: the node is not ready")
	}
	return nil
}

func printStatus(w io.Writer, r statusReport) {
	fmt.Fprintf(w, "status: %s\n", r.Status)
	names := make([]string, 0, len(r.Checks))
	for n := range r.Checks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := r.Checks[n]
		if c.Detail != "" {
			fmt.Fprintf(w, "  %-18s %-9s %s\n", n, c.Status, c.Detail)
		} else {
			fmt.Fprintf(w, "  %-18s %s\n", n, c.Status)
		}
	}
}
