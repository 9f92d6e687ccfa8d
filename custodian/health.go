package custodian

import (
	"context"
	"sync"
	"time"

	"github.com/keywarden/keywarden/internal/apierr"
)

// Health is the custodian's state for /readyz. Per decisions/20 it never
// makes the node unready: a Vault problem shows as Status "degraded" (the
// custodian routes answer 503 themselves) while passkey and Firebase
// releases go on.
type Health struct {
	Status    string    `json:"status"`           // "ok" or "degraded"
	Reason    string    `json:"reason,omitempty"` // public, no secrets
	Code      string    `json:"code,omitempty"`   // the error code behind Reason
	Sealed    bool      `json:"sealed,omitempty"`
	CheckedAt time.Time `json:"checked_at"`
}

// OK reports whether Vault answered as it should.
func (h Health) OK() bool { return h.Status == "ok" }

const (
	healthTTL     = 2 * time.Second         // a readiness probe storm costs one Vault check per TTL
	healthTimeout = 1500 * time.Millisecond // longest a Health call waits for Vault
)

type healthCache struct {
	mu      sync.Mutex
	last    Health
	running chan struct{} // closed when the check in progress ends
}

// Health checks Vault's seal state and that the token still works, at most
// once per 2 s (concurrent callers share one check), and waits at most
// 1.5 s or until ctx ends: then it reports the last known state, or
// degraded when there is none. It makes no Transit call.
func (c *Client) Health(ctx context.Context) Health {
	c.health.mu.Lock()
	if !c.health.last.CheckedAt.IsZero() && time.Since(c.health.last.CheckedAt) < healthTTL {
		h := c.health.last
		c.health.mu.Unlock()
		return h
	}
	running := c.health.running
	if running == nil {
		running = make(chan struct{})
		c.health.running = running
		go func() {
			h := c.checkHealth()
			c.health.mu.Lock()
			c.health.last = h
			c.health.running = nil
			c.health.mu.Unlock()
			close(running)
		}()
	}
	c.health.mu.Unlock()

	t := time.NewTimer(healthTimeout)
	defer t.Stop()
	select {
	case <-running:
	case <-ctx.Done():
	case <-t.C:
	}
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	if !c.health.last.CheckedAt.IsZero() {
		return c.health.last
	}
	return Health{Status: "degraded", Reason: "Vault has not answered yet", Code: ErrVaultUnavailable.Code, CheckedAt: time.Now()}
}

func (c *Client) checkHealth() Health {
	ctx, cancel := context.WithTimeout(context.Background(), healthTimeout)
	defer cancel()
	now := time.Now()
	degraded := func(e *apierr.Error) Health {
		return Health{Status: "degraded", Reason: e.Message, Code: e.Code, CheckedAt: now}
	}
	select {
	case <-c.stop:
		return degraded(ErrVaultUnavailable.WithMessage("the Vault client is shut down"))
	default:
	}
	hr, err := c.vc.Sys().HealthWithContext(ctx)
	if err != nil {
		e, _ := classify(err)
		return degraded(e)
	}
	if hr.Sealed {
		h := degraded(ErrVaultUnavailable.WithMessage("Vault is sealed"))
		h.Sealed = true
		return h
	}
	if !hr.Initialized {
		return degraded(ErrVaultUnavailable.WithMessage("Vault is not initialized"))
	}
	if e := c.authError(); e != nil {
		return degraded(e)
	}
	if _, err := c.vc.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		e, _ := classify(err)
		if e.Code == ErrVaultForbidden.Code {
			e = e.WithMessage("Vault refuses Keywarden's token (expired or revoked)")
		}
		return degraded(e)
	}
	if !c.keyOK.Load() {
		// The key has not been checked yet (Vault was down at start).
		if _, err := c.EnsureKey(ctx); err != nil {
			e, _ := classify(err)
			return degraded(e)
		}
	}
	return Health{Status: "ok", CheckedAt: now}
}
