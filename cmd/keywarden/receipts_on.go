//go:build !bench_noreceipts

package main

// benchNoReceipts is set only in the benchmark build of
// scripts/bench-receipts.sh (tag bench_noreceipts), which measures what
// receipts cost a release against the same code without them.
const benchNoReceipts = false
