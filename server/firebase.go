package server

import (
	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/server/firebase"
	"github.com/keywarden/keywarden/server/keys"
)

// FirebaseVerifier verifies Firebase ID tokens (server/firebase.Verifier).
type FirebaseVerifier = firebase.TokenVerifier

// MethodFirebase is the backup method of keys stored through a Firebase
// ID token ([firebase.Method]).
const MethodFirebase = firebase.Method

// ErrReauthenticate refuses a delete with a token from an old sign-in
// when firebase.overwrite_max_auth_age is set ([keys.ErrReauthenticate]).
var ErrReauthenticate = keys.ErrReauthenticate

// KeyResponse is a released key ([firebase.KeyResponse]).
type KeyResponse = firebase.KeyResponse

// HPKEInfo is the HPKE info string a Firebase release is sealed with
// ([firebase.HPKEInfo]).
func HPKEInfo(route string, owner enclave.Owner) []byte { return firebase.HPKEInfo(route, owner) }
