package server

import (
	"context"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/enclave"
	"github.com/keywarden/keywarden/internal/apierr"
	"github.com/keywarden/keywarden/server/httpx"
)

// OwnerData is a capability that keeps records under owners of every kind
// (not only user ids): GET /v1/admin/owners/{owner} describes them.
// A UserData without it is asked only for user: owners.
type OwnerData interface {
	// DescribeOwner returns a JSON-able description without secrets, or
	// nil when nothing is kept for owner.
	DescribeOwner(ctx context.Context, owner enclave.Owner) (any, error)
	// Name is the key under which DescribeOwner's answer appears.
	Name() string
}

// OwnerDeleter is a capability whose per-owner data the admin's deletion
// of an owner of any kind (a Firebase user as well as a user id) removes;
// for a user id it is called instead of UserData.DeleteUser.
type OwnerDeleter interface {
	DeleteOwnerData(ctx context.Context, owner enclave.Owner) error
}

type ownerDescription struct {
	Owner string            `json:"owner"`
	Keys  []enclave.KeyInfo `json:"keys"`
	Data  map[string]any    `json:"data,omitempty"`
}

// describeOwner lists what is kept for any owner: its keys (never their
// values) and what the capabilities keep (custodian and client shares
// without the shares).
func (s *Server) describeOwner(c echo.Context) error {
	owner, err := httpx.OwnerParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	keys, err := s.opts.Custody.ListKeys(ctx, owner)
	if err != nil {
		return err
	}
	d := ownerDescription{Owner: string(owner), Keys: keys, Data: map[string]any{}}
	if d.Keys == nil {
		d.Keys = []enclave.KeyInfo{}
	}
	userID, isUser := strings.CutPrefix(string(owner), "user:")
	for _, u := range s.opts.Users {
		var v any
		switch od, ok := u.(OwnerData); {
		case ok:
			v, err = od.DescribeOwner(ctx, owner)
		case isUser && ValidUserID(userID) == nil:
			v, err = u.DescribeUser(ctx, userID)
		default:
			continue
		}
		if err != nil {
			return err
		}
		if v != nil {
			d.Data[u.Name()] = v
		}
	}
	if len(d.Keys) == 0 && len(d.Data) == 0 {
		return apierr.ErrNotFound.WithMessage("nothing is stored for this owner")
	}
	return c.JSON(http.StatusOK, d)
}

func (s *Server) listAnyOwnerVersions(c echo.Context) error {
	owner, err := httpx.OwnerParam(c)
	if err != nil {
		return err
	}
	method, err := httpx.PathParam(c, "method")
	if err != nil {
		return apierr.ErrBadRequest.WithMessage("the method is not URL-escaped correctly")
	}
	return s.listOwnerVersions(c, owner, method)
}

func (s *Server) restoreAnyOwnerVersion(c echo.Context) error {
	owner, err := httpx.OwnerParam(c)
	if err != nil {
		return err
	}
	method, err := httpx.PathParam(c, "method")
	if err != nil {
		return apierr.ErrBadRequest.WithMessage("the method is not URL-escaped correctly")
	}
	return s.restoreOwnerVersion(c, owner, method)
}
