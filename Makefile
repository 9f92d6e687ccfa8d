# Keywarden build entry points. The scripts under scripts/ stay the primary
# interface (README: "The two commands"); these targets wrap them and add
# the release build.
#
#   make release        static release binary in $(OUT)/keywarden (no cgo, no TPM simulator)
#   make reproducible   build the release binary twice from two clean clones of HEAD, in
#                       different folders (the second with an empty build cache), compare digests
#   make security       score image/keywarden.service with `systemd-analyze security --offline=yes`
#   make test           scripts/test.sh (installs packages, runs every test)
#   make dev            scripts/dev.sh (simulated TPM on 127.0.0.1:8420)

GO  ?= go
OUT ?= dist

# The release build's flags are fixed here and nowhere else: a build is
# reproducible only with the same flags, the same Go toolchain (go.mod's
# toolchain line) and the same source.
#   CGO_ENABLED=0  static binary; leaves the cgo TPM simulator out (`dev` is refused)
#   GOFLAGS=       ignore flags from the caller's environment
#   -trimpath      no build-machine paths in the binary
#   -buildvcs=true stamp the VCS revision: `keywarden version` reads it from
#                  debug.ReadBuildInfo (no -ldflags -X, no build time)
RELEASE_ENV   := CGO_ENABLED=0 GOFLAGS=
RELEASE_FLAGS := -trimpath -buildvcs=true

.PHONY: release reproducible security test dev clean

release:
	@mkdir -p $(OUT)
	$(RELEASE_ENV) $(GO) build $(RELEASE_FLAGS) -o $(OUT)/keywarden ./cmd/keywarden
	@sha256sum $(OUT)/keywarden

reproducible:
	bash image/reproducible.sh

security:
	systemd-analyze security --offline=yes image/keywarden.service

test:
	bash scripts/test.sh

dev:
	bash scripts/dev.sh

clean:
	rm -rf $(OUT)
