//go:build tools

package keywarden

import (
	_ "filippo.io/age"
	_ "github.com/go-webauthn/webauthn/webauthn"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/google/go-tpm-tools/simulator"
	_ "github.com/google/go-tpm/tpm2"
	_ "github.com/hashicorp/vault/api"
	_ "github.com/labstack/echo/v4"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "go.etcd.io/bbolt"
	_ "gopkg.in/yaml.v3"
	_ "golang.org/x/sync/singleflight"
	_ "golang.org/x/sys/unix"
	_ "github.com/fxamacker/cbor/v2"
)
