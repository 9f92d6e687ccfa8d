//go:build bench_noreceipts

package main

// benchNoReceipts: this build makes no appliance signing key, so its
// audit anchors are HMAC only and its releases carry no receipt. Only
// scripts/bench-receipts.sh builds it, to compare; no configuration turns
// receipts off, and the build runs nothing but `keywarden dev` (run).
const benchNoReceipts = true
