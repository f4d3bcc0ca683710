//go:build !linux

package commands

import (
	"net"

	"github.com/relock/relock/locktable"
)

// Event loops are Linux-only (epoll); elsewhere redcon serves every
// connection. These stand-ins keep the shared code compiling.

type evloop struct{}

type lconn struct{ loop *evloop }

type loopMsg struct {
	c     *lconn
	kind  uint8
	grant locktable.Grant
}

const (
	msgGrant = iota + 2
	msgKill  = iota + 3
)

func (l *evloop) post(loopMsg) {}

func (c *lconn) kill() {}

func (s *Server) startLoops([]net.Listener) (bool, error) { return false, nil }

func (s *Server) stopLoops() {}
