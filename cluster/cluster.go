// Package cluster is the appliance's membership in a cluster of appliances.
// This file is the seam between the attested join (package cluster/join)
// and the embedded member: [Member] on the approving side, [Joined] on the
// joining side.
package cluster

import (
	"context"

	"github.com/keywarden/keywarden/internal/secret"
)

type Member interface { // implemented by the embedded member (approver side)
	AddLearner(ctx context.Context, name string, peerURLs []string) (memberID uint64, initialCluster string, err error)
	ClusterID() uint64
}
type Joined struct { // what the joiner ends with; the member helper persists it
	RootKey        secret.Bytes // 32 bytes, from its own TPM's credential activation
	Name           string
	InitialCluster string
	ClusterID      uint64
	MemberID       uint64
}
