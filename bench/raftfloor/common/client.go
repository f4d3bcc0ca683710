// Package common: client-facing request/response server shared by both node variants.
// Protocol: client sends 8-byte request id; node replies with the same 8 bytes once the
// request's entry is committed AND applied on this (leader) node, or 0xFFFF.. on failure.
package common

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
)

const Fail = ^uint64(0)

// ServeClients accepts client connections; propose blocks until commit+apply (true) or failure.
func ServeClients(addr string, propose func(reqID uint64) bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c, propose)
		}
	}()
	return nil
}

func handle(c net.Conn, propose func(uint64) bool) {
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	r := bufio.NewReader(c)
	var in, out [8]byte
	for {
		if _, err := io.ReadFull(r, in[:]); err != nil {
			return
		}
		id := binary.LittleEndian.Uint64(in[:])
		if propose(id) {
			binary.LittleEndian.PutUint64(out[:], id)
		} else {
			binary.LittleEndian.PutUint64(out[:], Fail)
		}
		if _, err := c.Write(out[:]); err != nil {
			return
		}
	}
}

// Payload builds the 100-byte entry payload: key(8) | reqID(8) | padding.
func Payload(key, reqID uint64) []byte {
	b := make([]byte, 100)
	binary.LittleEndian.PutUint64(b[0:], key)
	binary.LittleEndian.PutUint64(b[8:], reqID)
	for i := 16; i < 100; i++ {
		b[i] = byte(i)
	}
	return b
}
