package custodian

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/internal/apierr"
)

// minReloginInterval keeps a policy that refuses an operation (403) from
// turning every request into a login: at most one login per interval.
const minReloginInterval = 2 * time.Second

// login authenticates once and installs the token. For token auth it looks
// the configured token up (to learn its TTL for renewal).
func (c *Client) login(ctx context.Context) (*api.Secret, error) {
	c.mu.Lock()
	c.lastLogin = time.Now()
	c.mu.Unlock()

	var sec *api.Secret
	err := c.do(ctx, false, func(ctx context.Context) error {
		var err error
		switch c.opts.Auth {
		case AuthToken:
			c.vc.SetToken(c.opts.Token.Reveal())
			var look *api.Secret
			look, err = c.vc.Auth().Token().LookupSelfWithContext(ctx)
			if err == nil {
				sec, err = tokenSecret(c.opts.Token.Reveal(), look)
			}
		case AuthAppRole:
			sec, err = c.loginWrite(ctx, "auth/"+c.opts.AppRole.Mount+"/login", map[string]any{
				"role_id":   c.opts.AppRole.RoleID,
				"secret_id": c.opts.AppRole.SecretID.Reveal(),
			})
		case AuthCert:
			data := map[string]any{}
			if c.opts.Cert.Role != "" {
				data["name"] = c.opts.Cert.Role
			}
			sec, err = c.loginWrite(ctx, "auth/"+c.opts.Cert.Mount+"/login", data)
		case AuthTPMCert:
			data := map[string]any{}
			if c.opts.TPMCert.Role != "" {
				data["name"] = c.opts.TPMCert.Role
			}
			sec, err = c.loginWrite(ctx, "auth/"+c.opts.TPMCert.Mount+"/login", data)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if c.opts.Auth != AuthToken {
		c.vc.SetToken(sec.Auth.ClientToken)
	}
	c.setAuthErr(nil)
	c.log.Info("logged in to Vault", "auth", string(c.opts.Auth),
		"ttl", time.Duration(sec.Auth.LeaseDuration)*time.Second, "renewable", sec.Auth.Renewable)
	return sec, nil
}

// loginWrite posts a login with a token-less clone of the client (a stale
// token must not be sent with a login).
func (c *Client) loginWrite(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	lc, err := c.vc.Clone()
	if err != nil {
		return nil, err
	}
	lc.ClearToken()
	sec, err := lc.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, errors.New("vault login answered without a token")
	}
	return sec, nil
}

// tokenSecret shapes a lookup-self answer like a login so the lifetime
// watcher can renew the token.
func tokenSecret(token string, look *api.Secret) (*api.Secret, error) {
	if look == nil {
		return nil, errors.New("vault token lookup answered nothing")
	}
	ttl, err := look.TokenTTL()
	if err != nil {
		return nil, fmt.Errorf("token ttl: %w", err)
	}
	renewable, err := look.TokenIsRenewable()
	if err != nil {
		return nil, fmt.Errorf("token renewable: %w", err)
	}
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken:   token,
		Renewable:     renewable,
		LeaseDuration: int(ttl / time.Second),
	}}, nil
}

func (c *Client) canRelogin() bool { return c.opts.Auth != AuthToken }

func (c *Client) currentToken() string { return c.vc.Token() }

// relogin logs in again (AppRole, cert) after Vault refused the token. All
// concurrent callers share one login; within minReloginInterval of the last
// one it does not log in again.
func (c *Client) relogin(ctx context.Context) error {
	c.mu.Lock()
	recent := time.Since(c.lastLogin) < minReloginInterval
	lastErr := c.authErr
	c.mu.Unlock()
	if recent {
		if lastErr != nil {
			return lastErr
		}
		return nil
	}
	ch := c.logins.DoChan("login", func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.Timeout*time.Duration(c.opts.MaxRetries+1)+time.Second)
		defer cancel()
		sec, err := c.login(lctx)
		if err != nil {
			e, _ := classify(err)
			c.setAuthErr(e)
			return nil, e
		}
		c.handOver(sec)
		return nil, nil
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		e, _ := classify(ctx.Err())
		return e
	}
}

// handOver gives a fresh login to the renewal loop, replacing one it has
// not picked up yet.
func (c *Client) handOver(sec *api.Secret) {
	for {
		select {
		case c.newSecret <- sec:
			return
		default:
		}
		select {
		case <-c.newSecret:
		default:
		}
	}
}

func (c *Client) setAuthErr(e *apierr.Error) {
	c.mu.Lock()
	c.authErr = e
	c.mu.Unlock()
}

func (c *Client) authError() *apierr.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authErr
}

// renewLoop keeps the token alive with the library's LifetimeWatcher and,
// for AppRole and cert, logs in again when the watcher gives up (max TTL
// reached, renewal refused). With no token yet (Vault was down at start) it
// keeps trying to log in, with backoff up to 30 s.
func (c *Client) renewLoop(sec *api.Secret) {
	defer c.wg.Done()
	var (
		w       *api.LifetimeWatcher
		doneCh  <-chan error
		renewCh <-chan *api.RenewOutput
		retry   <-chan time.Time
		fails   int
	)
	watch := func(s *api.Secret) {
		if w != nil {
			w.Stop()
		}
		w, doneCh, renewCh = nil, nil, nil
		if s == nil || s.Auth == nil || !s.Auth.Renewable || s.Auth.LeaseDuration <= 0 {
			return // e.g. a root token: nothing to renew
		}
		nw, err := c.vc.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: s})
		if err != nil {
			c.log.Error("cannot watch the Vault token", "error", err)
			return
		}
		w, doneCh, renewCh = nw, nw.DoneCh(), nw.RenewCh()
		go nw.Start()
	}
	tryLogin := func() {
		ctx, cancel := context.WithTimeout(c.stopCtx, c.opts.Timeout*time.Duration(c.opts.MaxRetries+1)+time.Second)
		s, err := c.login(ctx)
		cancel()
		if err != nil && c.stopCtx.Err() != nil {
			return // closing
		}
		if err != nil {
			e, _ := classify(err)
			c.setAuthErr(e)
			fails++
			d := min(time.Second<<min(fails, 5), 30*time.Second)
			c.log.Warn("Vault login failed; retrying", "in", d, "error", e.Cause)
			retry = time.After(d)
			return
		}
		fails, retry = 0, nil
		watch(s)
	}

	if sec == nil {
		retry = time.After(backoff(0))
	} else {
		watch(sec)
	}
	for {
		select {
		case <-c.stop:
			if w != nil {
				w.Stop()
			}
			return
		case s := <-c.newSecret:
			fails, retry = 0, nil
			watch(s)
		case r := <-renewCh:
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				c.log.Debug("Vault token renewed", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
			}
		case err := <-doneCh:
			w.Stop()
			w, doneCh, renewCh = nil, nil, nil
			if c.canRelogin() {
				c.log.Info("Vault token at end of life; logging in again", "reason", errString(err))
				tryLogin()
				continue
			}
			c.log.Error("the configured Vault token can no longer be renewed; configure a new one", "reason", errString(err))
			c.setAuthErr(ErrVaultForbidden.WithMessage("the configured Vault token expired or can no longer be renewed"))
		case <-retry:
			tryLogin()
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "max TTL reached"
	}
	return err.Error()
}
