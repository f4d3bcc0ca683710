//go:build !linux

package commands

import "net"

// Event loops are Linux-only (epoll); elsewhere every connection is served
// by a goroutine of its own (goconn.go).

type evloop struct{}

func (s *Server) startLoops([]net.Listener) (bool, error) { return false, nil }

func (s *Server) stopLoops() {}
