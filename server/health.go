package server

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

type checkResult struct {
	Status  string `json:"status"` // ok | failing | degraded
	Detail  string `json:"detail,omitempty"`
	private bool   // Check.Private: admin readiness only
}

type readiness struct {
	Status string                 `json:"status"` // ready | not_ready
	Checks map[string]checkResult `json:"checks"`
}

// healthz is liveness: the process serves.
func (s *Server) healthz(c echo.Context) error {
	if c.Request().Method == http.MethodHead {
		return c.NoContent(http.StatusOK)
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is readiness (decisions/20): 503 only when the root key is
// sealed, the store is not writable, or the node is draining. Vault,
// Google's key set and the clock appear as "degraded" with 200.
//
// Anyone who reaches the listener may ask, so the answer holds statuses
// only (ready or not, and one status word per check): a check's detail can
// carry a TPM error, Vault's address or the network's layout. The details
// are on the admin API (adminReadyz).
func (s *Server) readyz(c echo.Context) error {
	return s.answerReadiness(c, s.Readiness(c.Request().Context()).statusesOnly())
}

// adminReadyz is GET /v1/admin/readyz: readiness with every check's detail.
func (s *Server) adminReadyz(c echo.Context) error {
	return s.answerReadiness(c, s.Readiness(c.Request().Context()))
}

func (s *Server) answerReadiness(c echo.Context, r readiness) error {
	code := http.StatusOK
	if r.Status != "ready" {
		code = http.StatusServiceUnavailable
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	if c.Request().Method == http.MethodHead {
		return c.NoContent(code)
	}
	return c.JSON(code, r)
}

// statusesOnly is r without the checks' details and without the private
// checks.
func (r readiness) statusesOnly() readiness {
	out := readiness{Status: r.Status, Checks: make(map[string]checkResult, len(r.Checks))}
	for name, c := range r.Checks {
		if c.private {
			continue
		}
		out.Checks[name] = checkResult{Status: c.Status}
	}
	return out
}

// Readiness evaluates the checks.
func (s *Server) Readiness(ctx context.Context) readiness {
	r := readiness{Status: "ready", Checks: map[string]checkResult{}}
	fail := func(name, detail string) {
		r.Status = "not_ready"
		r.Checks[name] = checkResult{Status: "failing", Detail: detail}
	}
	if s.opts.Custody == nil {
		detail := s.opts.SealedReason
		if detail == "" {
			detail = "the root key is sealed"
		}
		fail("root_key", detail)
	} else {
		r.Checks["root_key"] = checkResult{Status: "ok"}
	}
	if err := s.storeWritable(ctx); err != nil {
		fail("store", "the store is not writable")
	} else {
		r.Checks["store"] = checkResult{Status: "ok"}
	}
	if s.draining.Load() {
		fail("draining", "the node is shutting down")
	}
	for _, chk := range s.opts.Degraded {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := chk.Run(cctx)
		cancel()
		if err != nil {
			r.Checks[chk.Name] = checkResult{Status: "degraded", Detail: err.Error(), private: chk.Private}
		} else {
			r.Checks[chk.Name] = checkResult{Status: "ok", private: chk.Private}
		}
	}
	return r
}

// storeWritable commits a heartbeat at most every two seconds, so a probe
// per second from several load balancers costs little.
func (s *Server) storeWritable(ctx context.Context) error {
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	if time.Since(s.storeChecked) < 2*time.Second {
		return s.storeErr
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s.storeErr = s.opts.DB.Writable(cctx)
	s.storeChecked = time.Now()
	return s.storeErr
}
