//go:build !linux

package commands

import (
	"net"

	"github.com/relock/relock/locktable"
)

// Event loops are Linux-only (epoll); elsewhere redcon serves every
// connection. These stand-ins keep the shared code compiling.

type evloop struct{}

type lconn struct{}

func (c *lconn) commitLater(*locktable.Events, bool) bool { return false }

func (c *lconn) grant(locktable.Grant) {}

func (c *lconn) kill() {}

func (s *Server) startLoops([]net.Listener) (bool, error) { return false, nil }

func (s *Server) stopLoops() {}
