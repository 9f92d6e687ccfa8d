// Package image holds Keywarden's deployment files and their tests; it has
// no Go API.
//
// # Files
//
//   - keywarden.service: the hardened systemd unit (own user, empty
//     capability set, read-only system, only /dev/tpmrm0 as device,
//     system-call filter, memory-deny-write-execute, graceful stop).
//   - credentials.conf: drop-in that hands secrets over with
//     LoadCredential= and the settings' …_FILE forms.
//   - keywarden-backup.service, keywarden-backup.timer: daily online backup.
//   - sysusers.conf, tmpfiles.conf: the keywarden user and its folders.
//   - keywarden.yaml: an example production configuration naming every
//     setting.
//   - reproducible.sh: builds the release binary twice and compares digests
//     (`make reproducible`).
//
// # Tests
//
// The tests score the units with `systemd-analyze security --offline=yes`
// (Debian's systemd) and fail when the exposure rises past the threshold
// set in image_test.go; check the unit's settings one by one; create the user and
// folders with systemd-sysusers and systemd-tmpfiles in a scratch root; load
// the example configuration with the real loader; and (without -short)
// build the release binary twice and compare the digests.
//
// docs/OPERATIONS.md is the install guide that uses these files.
package image
