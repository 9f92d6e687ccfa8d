package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/keywarden/keywarden/store"
)

// EtcdSnapshotter is the etcd backend's maintenance snapshot
// (etcdstore.Store.MaintenanceSnapshot): the whole database of one
// member, for the operator who restores the etcd cluster with etcdutl.
type EtcdSnapshotter interface {
	MaintenanceSnapshot(ctx context.Context) (io.ReadCloser, error)
}

// etcdSnapshot is GET /v1/admin/backup/etcd-snapshot: it streams etcd's
// snapshot of the member the node reaches (audited as
// admin_etcd_snapshot). A member that cannot take one now answers 503
// store_unavailable before any byte is sent; a stream cut later is cut
// short (the client's check of etcd's trailing hash catches it).
func (s *Server) etcdSnapshot(es EtcdSnapshotter, c echo.Context) error {
	ctx := c.Request().Context()
	if err := s.opts.Audit.Record(ctx, s.event(c, "admin_etcd_snapshot", "", "", "")); err != nil {
		return err
	}
	rc, err := es.MaintenanceSnapshot(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	if _, err := br.Peek(1); err != nil {
		return fmt.Errorf("%w: etcd snapshot: %w", store.ErrUnavailable, err)
	}
	c.Response().Header().Set(echo.HeaderContentType, "application/octet-stream")
	c.Response().Header().Set("Content-Disposition", `attachment; filename="etcd-snapshot.db"`)
	c.Response().WriteHeader(http.StatusOK)
	if _, err := io.Copy(c.Response(), br); err != nil {
		s.log.Error("etcd snapshot stream failed", "err", err)
	}
	return nil
}
