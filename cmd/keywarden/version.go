package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// buildInfo is the version from the module's build information (no
// ldflags needed: reproducible builds stay reproducible).
func buildInfo() (version, revision string, modified bool) {
	version, revision = "(devel)", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if bi.Main.Version != "" {
		version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return
}

func versionString() string {
	v, r, m := buildInfo()
	dirty := ""
	if m {
		dirty = "+dirty"
	}
	return fmt.Sprintf("keywarden %s (%s%s)", v, r, dirty)
}

// binaryDigest is the SHA-256 of the running executable: informational
// only unless the boot measured it (see docs/ARCHITECTURE.md).
func binaryDigest() string {
	p, err := os.Executable()
	if err != nil {
		return ""
	}
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}
