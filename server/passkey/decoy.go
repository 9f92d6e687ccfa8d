package passkey

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/store"
)

// Decoy allowCredentials (decisions/07). begin for a user without passkeys
// must not be told apart from begin for a user with some, by any field:
// not the number of credentials, not the length of their ids, not their
// transports (or their absence). So decoys are drawn from what real users
// look like here: the service keeps, per relying party and owner kind
// (native users, Portal clients), the distribution of whole user shapes
// (the ordered list of (id length, transports) of a user's active
// passkeys, as begin renders it), learnt from the store at start and
// refreshed in the background every decoyShapeRefresh. An unknown user's
// shape is picked from it by an HMAC of the user id, and the ids' bytes
// come from the same HMAC: stable from one begin to the next (between
// refreshes, and across them unless the user's draw falls where the
// distribution moved), and as random-looking as real ids. Before any
// passkey is registered, a built-in mix of common authenticators stands in.

// decoyShapeRefresh is how often the distribution is relearnt.
const decoyShapeRefresh = time.Hour

// maxShapeClasses bounds the distinct user shapes kept per table (the
// rarest are dropped beyond it).
const maxShapeClasses = 4096

// credShape is what begin shows of one credential besides its id bytes.
type credShape struct {
	IDLen      int      `json:"l"`
	Transports []string `json:"t,omitempty"`
}

type shapeClass struct {
	shape []credShape
	cum   uint64 // users in this class and the ones before it
}

// shapeTable is the distribution of user shapes of one (RP, owner kind).
type shapeTable struct {
	classes []shapeClass // ordered by shape, cumulative counts
	total   uint64
}

type decoyShapes struct {
	mu         sync.RWMutex
	tables     map[string]*shapeTable
	built      time.Time
	refreshing atomic.Bool
}

func shapeTableKey(rpID string, owner enclave.Owner) string {
	kind, _, _ := strings.Cut(string(owner), ":")
	return rpID + "\x00" + kind
}

// refreshDecoyShapes relearns the distribution from the store.
func (s *Service) refreshDecoyShapes(ctx context.Context) error {
	type rec struct {
		ID         []byte        `json:"id"`
		Owner      enclave.Owner `json:"owner"`
		RPID       string        `json:"rpId"`
		Transports []string      `json:"transports"`
		Created    time.Time     `json:"created"`
		Revoked    *time.Time    `json:"revoked"`
	}
	users := map[string][]*rec{} // owner ‖ RP → active credentials
	err := s.db.View(ctx, func(tx *store.Tx) error {
		return tx.ForEach(store.BucketCredentials, store.Prefix("c"), func(_, v []byte) error {
			var r rec
			if json.Unmarshal(v, &r) != nil || r.Revoked != nil {
				return nil
			}
			k := string(r.Owner) + "\x00" + r.RPID
			users[k] = append(users[k], &r)
			return nil
		})
	})
	if err != nil {
		return err
	}
	counts := map[string]map[string]uint64{} // table → shape JSON → users
	for _, cs := range users {
		// Records come in credential-id order, as the owner index lists
		// them; begin then orders by creation (sortByCreated is stable).
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].Created.Before(cs[j].Created) })
		shape := make([]credShape, len(cs))
		for i, c := range cs {
			shape[i] = credShape{IDLen: len(c.ID), Transports: c.Transports}
		}
		key, _ := json.Marshal(shape)
		tk := shapeTableKey(cs[0].RPID, cs[0].Owner)
		if counts[tk] == nil {
			counts[tk] = map[string]uint64{}
		}
		counts[tk][string(key)]++
	}
	tables := make(map[string]*shapeTable, len(counts))
	for tk, m := range counts {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if len(keys) > maxShapeClasses {
			sort.SliceStable(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
			keys = keys[:maxShapeClasses]
			sort.Strings(keys)
		}
		t := &shapeTable{}
		for _, k := range keys {
			var shape []credShape
			if json.Unmarshal([]byte(k), &shape) != nil {
				continue
			}
			t.total += m[k]
			t.classes = append(t.classes, shapeClass{shape: shape, cum: t.total})
		}
		tables[tk] = t
	}
	s.shapes.mu.Lock()
	s.shapes.tables, s.shapes.built = tables, s.now()
	s.shapes.mu.Unlock()
	return nil
}

// maybeRefreshDecoyShapes starts a background refresh when the
// distribution is older than decoyShapeRefresh. It is called on every
// begin, known user or not, so that the refresh says nothing about who
// triggered it.
func (s *Service) maybeRefreshDecoyShapes() {
	s.shapes.mu.RLock()
	stale := s.now().Sub(s.shapes.built) >= decoyShapeRefresh
	s.shapes.mu.RUnlock()
	if !stale || !s.shapes.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.shapes.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.refreshDecoyShapes(ctx); err != nil {
			s.log.Warn("passkey: relearning decoy credential shapes failed; the previous ones stay", "err", err)
		}
	}()
}

// decoyDescriptors are the allowCredentials of a user without passkeys.
func (s *Service) decoyDescriptors(rpID string, owner enclave.Owner, userID string) []protocol.CredentialDescriptor {
	m := hmac.New(sha256.New, s.decoy.Reveal())
	m.Write([]byte("keywarden passkey decoy v2\x00" + rpID + "\x00" + string(owner) + "\x00" + userID))
	seed := m.Sum(nil)
	s.shapes.mu.RLock()
	t := s.shapes.tables[shapeTableKey(rpID, owner)]
	s.shapes.mu.RUnlock()
	var shape []credShape
	if t != nil && t.total > 0 {
		u := binary.BigEndian.Uint64(seed[:8]) % t.total
		i := sort.Search(len(t.classes), func(i int) bool { return t.classes[i].cum > u })
		shape = t.classes[i].shape
	} else {
		shape = priorShape(seed)
	}
	out := make([]protocol.CredentialDescriptor, 0, len(shape))
	for i, cs := range shape {
		d := protocol.CredentialDescriptor{Type: protocol.PublicKeyCredentialType, CredentialID: decoyID(seed, i, cs)}
		for _, tr := range cs.Transports {
			d.Transport = append(d.Transport, protocol.AuthenticatorTransport(tr))
		}
		out = append(out, d)
	}
	return out
}

// decoyID is the id of the i-th decoy credential of shape cs: n bytes of
// HMAC(seed, "id" ‖ i ‖ shape ‖ block). The shape is in the input so that
// when a refresh changes what position i looks like, its id changes as
// well (as when a user replaces a passkey), never only its length or
// transports (which no real credential does).
func decoyID(seed []byte, i int, cs credShape) []byte {
	shape, _ := json.Marshal(cs)
	n := cs.IDLen
	out := make([]byte, 0, n+sha256.Size)
	for block := 0; len(out) < n; block++ {
		m := hmac.New(sha256.New, seed)
		m.Write([]byte("id"))
		m.Write(binary.BigEndian.AppendUint32(nil, uint32(i)))
		m.Write(shape)
		m.Write(binary.BigEndian.AppendUint32(nil, uint32(block)))
		out = m.Sum(out)
	}
	return out[:n]
}

// The built-in mix used before any passkey is registered: most users have
// one passkey, some two or three; platform passkeys dominate.
var (
	priorCounts = []uint8{70, 22, 8} // one, two, three passkeys (percent)
	priorKinds  = []struct {
		weight uint8
		shape  credShape
	}{
		{40, credShape{20, []string{"hybrid", "internal"}}}, // iCloud Keychain
		{25, credShape{16, []string{"hybrid", "internal"}}}, // Google Password Manager
		{10, credShape{32, []string{"internal"}}},           // Windows Hello
		{10, credShape{64, []string{"nfc", "usb"}}},         // security key
		{5, credShape{16, []string{"usb"}}},                 // older security key
		{10, credShape{16, nil}},                            // browsers that report no transports
	}
)

func priorShape(seed []byte) []credShape {
	pick := func(b byte, weights func(int) (uint8, bool)) int {
		n := int(b) % 100
		for i := 0; ; i++ {
			w, ok := weights(i)
			if !ok || n < int(w) {
				return i
			}
			n -= int(w)
		}
	}
	count := 1 + pick(seed[8], func(i int) (uint8, bool) {
		if i >= len(priorCounts)-1 {
			return 100, false
		}
		return priorCounts[i], true
	})
	out := make([]credShape, count)
	for i := range out {
		k := pick(seed[9+i], func(j int) (uint8, bool) {
			if j >= len(priorKinds)-1 {
				return 100, false
			}
			return priorKinds[j].weight, true
		})
		out[i] = priorKinds[k].shape
	}
	return out
}
