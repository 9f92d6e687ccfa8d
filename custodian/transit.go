package custodian

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/internal/secret"
)

// WrapItem is one share to wrap for one owner.
type WrapItem struct {
	UserID string // the derivation context: the share opens only for this id
	Share  []byte
}

// WrapResult is the outcome of one WrapItem.
type WrapResult struct {
	Ciphertext string
	KeyVersion int
	Err        error // *apierr.Error; nil on success
}

// UnwrapItem is one ciphertext to open (or rewrap) for its owner.
type UnwrapItem struct {
	UserID     string
	Ciphertext string
}

// UnwrapResult is the outcome of one UnwrapItem.
type UnwrapResult struct {
	Share secret.Bytes
	Err   error // *apierr.Error; nil on success
}

// RewrapResult is the outcome of rewrapping one UnwrapItem.
type RewrapResult struct {
	Ciphertext string
	KeyVersion int
	Err        error // *apierr.Error; nil on success
}

// Wrap encrypts share under the Transit key with userID as the derivation
// context. The ciphertext opens only with the same userID: Transit derives
// a per-user key from the context, so moving a ciphertext into another
// user's record makes it fail to open ([ErrCiphertextRejected]).
func (c *Client) Wrap(ctx context.Context, userID string, share []byte) (string, error) {
	r, err := c.WrapBatch(ctx, []WrapItem{{UserID: userID, Share: share}})
	if err != nil {
		return "", err
	}
	return r[0].Ciphertext, r[0].Err
}

// Unwrap decrypts a ciphertext made by Wrap for the same userID. Wipe the
// share when done.
func (c *Client) Unwrap(ctx context.Context, userID, ciphertext string) (secret.Bytes, error) {
	r, err := c.UnwrapBatch(ctx, []UnwrapItem{{UserID: userID, Ciphertext: ciphertext}})
	if err != nil {
		return secret.Bytes{}, err
	}
	return r[0].Share, r[0].Err
}

// WrapBatch wraps many shares with Transit's batch_input, [Options.BatchSize]
// items per Vault call. The error is for the whole call (Vault unavailable,
// forbidden); per-item failures are in each result's Err. Results are in
// the order of items.
func (c *Client) WrapBatch(ctx context.Context, items []WrapItem) ([]WrapResult, error) {
	out := make([]WrapResult, len(items))
	in := make([]transitItem, 0, len(items))
	idx := make([]int, 0, len(items))
	for i, it := range items {
		if err := checkUserID(it.UserID); err != nil {
			out[i].Err = err
			continue
		}
		if len(it.Share) == 0 || len(it.Share) > MaxShareSize {
			out[i].Err = ErrInvalidShare
			continue
		}
		in = append(in, transitItem{Plaintext: it.Share, Context: []byte(it.UserID)})
		idx = append(idx, i)
	}
	res, err := c.batch(ctx, "encrypt", in)
	if err != nil {
		return nil, err
	}
	for j, r := range res {
		i := idx[j]
		if r.Error != "" || r.Ciphertext == "" {
			out[i].Err = itemErr(r.Error, "")
			continue
		}
		out[i].Ciphertext, out[i].KeyVersion = r.Ciphertext, r.KeyVersion
		if out[i].KeyVersion == 0 {
			out[i].KeyVersion, _ = CiphertextVersion(r.Ciphertext)
		}
	}
	return out, nil
}

// UnwrapBatch opens many ciphertexts with batch_input, like WrapBatch.
func (c *Client) UnwrapBatch(ctx context.Context, items []UnwrapItem) ([]UnwrapResult, error) {
	out := make([]UnwrapResult, len(items))
	in, idx := c.ciphertextItems(items, func(i int, err error) { out[i].Err = err })
	res, err := c.batch(ctx, "decrypt", in)
	if err != nil {
		for _, r := range res {
			clear(r.Plaintext)
		}
		return nil, err
	}
	for j, r := range res {
		i := idx[j]
		if r.Error != "" {
			out[i].Err = itemErr(r.Error, in[j].Ciphertext)
			continue
		}
		out[i].Share = secret.NewBytes(r.Plaintext)
	}
	return out, nil
}

// Rewrap re-encrypts ciphertexts under the key's latest version without
// revealing them to Keywarden (Transit rewrap), batched like WrapBatch. A
// ciphertext below min_decryption_version cannot be rewrapped
// ([ErrVersionRetired]): rewrap before raising it.
func (c *Client) Rewrap(ctx context.Context, items []UnwrapItem) ([]RewrapResult, error) {
	out := make([]RewrapResult, len(items))
	in, idx := c.ciphertextItems(items, func(i int, err error) { out[i].Err = err })
	res, err := c.batch(ctx, "rewrap", in)
	if err != nil {
		return nil, err
	}
	for j, r := range res {
		i := idx[j]
		if r.Error != "" || r.Ciphertext == "" {
			out[i].Err = itemErr(r.Error, in[j].Ciphertext)
			continue
		}
		out[i].Ciphertext, out[i].KeyVersion = r.Ciphertext, r.KeyVersion
		if v, err := CiphertextVersion(r.Ciphertext); err == nil {
			out[i].KeyVersion = v
		}
	}
	return out, nil
}

func (c *Client) ciphertextItems(items []UnwrapItem, fail func(int, error)) ([]transitItem, []int) {
	in := make([]transitItem, 0, len(items))
	idx := make([]int, 0, len(items))
	for i, it := range items {
		if err := checkUserID(it.UserID); err != nil {
			fail(i, err)
			continue
		}
		if _, err := CiphertextVersion(it.Ciphertext); err != nil {
			fail(i, ErrCiphertextRejected.Wrap(err))
			continue
		}
		in = append(in, transitItem{Ciphertext: it.Ciphertext, Context: []byte(it.UserID)})
		idx = append(idx, i)
	}
	return in, idx
}

func checkUserID(id string) error {
	if id == "" || len(id) > 512 || strings.IndexByte(id, 0) >= 0 {
		return ErrInvalidOwner
	}
	return nil
}

func itemErr(text, ciphertext string) error {
	if e := itemError(text, ciphertext); e != nil {
		return e.Wrap(errors.New("vault: " + text))
	}
	return ErrVaultError.Wrap(errors.New("vault returned no result for the item"))
}

// transitItem is one batch_input entry. []byte fields travel as standard
// base64, which is what Transit expects for plaintext and context.
type transitItem struct {
	Plaintext  []byte `json:"plaintext,omitempty"`
	Ciphertext string `json:"ciphertext,omitempty"`
	Context    []byte `json:"context"`
}

type transitResult struct {
	Ciphertext string `json:"ciphertext"`
	Plaintext  []byte `json:"plaintext"`
	KeyVersion int    `json:"key_version"`
	Error      string `json:"error"`
}

// batch sends items to transit/<op>/<key> in chunks of BatchSize and
// returns one result per item. The request body holding plaintexts is
// wiped after each attempt (copies inside encoding/json and net/http are
// beyond reach).
func (c *Client) batch(ctx context.Context, op string, items []transitItem) ([]transitResult, error) {
	if len(items) == 0 {
		return nil, nil
	}
	if err := c.checkKey(ctx); err != nil {
		return nil, err
	}
	return c.sendBatch(ctx, op, items)
}

// sendBatch is batch without the key check (EnsureKey's probe uses it).
func (c *Client) sendBatch(ctx context.Context, op string, items []transitItem) ([]transitResult, error) {
	path := c.opts.TransitMount + "/" + op + "/" + c.opts.KeyName
	out := make([]transitResult, 0, len(items))
	for start := 0; start < len(items); start += c.opts.BatchSize {
		chunk := items[start:min(start+c.opts.BatchSize, len(items))]
		var res []transitResult
		err := c.call(ctx, func(ctx context.Context) error {
			body, err := json.Marshal(struct {
				BatchInput []transitItem `json:"batch_input"`
			}{chunk})
			if err != nil {
				return err
			}
			defer clear(body)
			resp, err := c.vc.Logical().WriteRawWithContext(ctx, path, body)
			if resp != nil {
				defer drainClose(resp)
			}
			// A batch with failed items answers 400 (or 500) with the
			// per-item results in the body; anything else is a call error.
			var re *api.ResponseError
			batchAnswer := err == nil || (resp != nil && errors.As(err, &re) && re.StatusCode == http.StatusBadRequest)
			if !batchAnswer {
				return err
			}
			var env struct {
				Data struct {
					BatchResults []transitResult `json:"batch_results"`
				} `json:"data"`
			}
			derr := json.NewDecoder(resp.Body).Decode(&env)
			if derr != nil || len(env.Data.BatchResults) != len(chunk) {
				for _, r := range env.Data.BatchResults {
					clear(r.Plaintext)
				}
				if err != nil {
					return err // a 400 about the request itself
				}
				return ErrVaultError.Wrap(fmt.Errorf("vault %s: %d results for %d items", op, len(env.Data.BatchResults), len(chunk)))
			}
			res = env.Data.BatchResults
			return nil
		})
		if err != nil {
			for _, r := range out {
				clear(r.Plaintext)
			}
			return nil, err
		}
		out = append(out, res...)
	}
	return out, nil
}

// KeyInfo describes the Transit key.
type KeyInfo struct {
	Name                 string `json:"name"`
	Type                 string `json:"type"`
	Derived              bool   `json:"derived"`
	LatestVersion        int    `json:"latest_version"`
	MinDecryptionVersion int    `json:"min_decryption_version"`
	MinEncryptionVersion int    `json:"min_encryption_version"`
}

// KeyInfo reads the Transit key's configuration (needs read on
// <mount>/keys/<name>).
func (c *Client) KeyInfo(ctx context.Context) (KeyInfo, error) {
	info, found, err := c.readKey(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	if !found {
		return KeyInfo{}, ErrVaultError.WithMessage("the Transit key %q does not exist", c.opts.KeyName)
	}
	return info, nil
}

// KeyVersion is the Transit key's latest version.
func (c *Client) KeyVersion(ctx context.Context) (int, error) {
	info, err := c.KeyInfo(ctx)
	return info.LatestVersion, err
}

func (c *Client) readKey(ctx context.Context) (KeyInfo, bool, error) {
	var info KeyInfo
	found := true
	err := c.call(ctx, func(ctx context.Context) error {
		resp, err := c.vc.Logical().ReadRawWithContext(ctx, c.opts.TransitMount+"/keys/"+c.opts.KeyName)
		if resp != nil {
			defer drainClose(resp)
		}
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			found = false
			return nil
		}
		if err != nil {
			return err
		}
		var env struct {
			Data KeyInfo `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			return fmt.Errorf("decode key: %w", err)
		}
		info = env.Data
		return nil
	})
	return info, found, err
}

// EnsureKey makes sure the Transit key exists and is derived, creating it
// (aes256-gcm96, derived=true) when it is missing. When the policy does not
// allow reading the key, it checks derivation with a probe instead: a
// ciphertext made for one context must not open under another. A key that
// is not derived is refused with [ErrKeyNotDerived]: it would silently
// ignore the per-user binding.
func (c *Client) EnsureKey(ctx context.Context) (KeyInfo, error) {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	info, found, err := c.readKey(ctx)
	switch {
	case err != nil:
		if ae, ok := apierr.As(err); !ok || ae.Code != ErrVaultForbidden.Code {
			return KeyInfo{}, err
		}
		info, err = c.probeDerived(ctx)
		if err != nil {
			return KeyInfo{}, err
		}
	case !found:
		err := c.call(ctx, func(ctx context.Context) error {
			_, err := c.vc.Logical().WriteWithContext(ctx, c.opts.TransitMount+"/keys/"+c.opts.KeyName, map[string]any{
				"type":    "aes256-gcm96",
				"derived": true,
			})
			return err
		})
		if err != nil {
			return KeyInfo{}, err
		}
		c.log.Info("created the Transit key", "key", c.opts.KeyName, "derived", true)
		if info, found, err = c.readKey(ctx); err != nil || !found {
			return KeyInfo{}, errors.Join(err, ErrVaultError.WithMessage("the Transit key vanished after it was created"))
		}
	}
	if !info.Derived {
		return KeyInfo{}, ErrKeyNotDerived
	}
	c.keyOK.Store(true)
	return info, nil
}

// probeDerived checks derivation with encrypt/decrypt only.
func (c *Client) probeDerived(ctx context.Context) (KeyInfo, error) {
	probe := []byte("keywarden-derivation-probe")
	a, b := "probe:a", "probe:b"
	res, err := c.sendBatch(ctx, "encrypt", []transitItem{{Plaintext: probe, Context: []byte(a)}})
	if err != nil {
		return KeyInfo{}, err
	}
	if res[0].Error != "" {
		return KeyInfo{}, itemErr(res[0].Error, "")
	}
	ct := res[0].Ciphertext
	res, err = c.sendBatch(ctx, "decrypt", []transitItem{{Ciphertext: ct, Context: []byte(b)}})
	if err != nil {
		return KeyInfo{}, err
	}
	if res[0].Error == "" {
		clear(res[0].Plaintext)
		return KeyInfo{}, ErrKeyNotDerived
	}
	v, _ := CiphertextVersion(ct)
	return KeyInfo{Name: c.opts.KeyName, Derived: true, LatestVersion: v}, nil
}

// checkKey runs EnsureKey once before the first Transit operation (when
// Vault was down in New).
func (c *Client) checkKey(ctx context.Context) error {
	if c.keyOK.Load() {
		return nil
	}
	_, err := c.EnsureKey(ctx)
	return err
}

// drainClose reads what is left of a response (at most 64 KiB) before
// closing it, so the connection is reused: a JSON decoder stops before the
// trailing newline, and an unread body costs a new TCP (and TLS) handshake.
func drainClose(resp *api.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	_ = resp.Body.Close()
}
