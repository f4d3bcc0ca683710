package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// unlockCmd is `relock unlock`.
type unlockCmd struct {
	clientFlags `embed:""`

	Force bool   `env:"-" help:"Release every hold of the lock, whoever holds it (FORCEUNLOCK). Asks nothing."`
	Name  string `arg:"" help:"Lock name."`
	Key   string `arg:"" optional:"" help:"Release only the hold with this key (UNLOCK), e.g. a detached hold's."`
}

// Run releases the lock and says how many holds it released.
func (u *unlockCmd) Run() error {
	switch {
	case u.Force && u.Key != "":
		return errors.New("unlock: give either --force or a KEY, not both")
	case !u.Force && u.Key == "":
		return errors.New("unlock: without the hold's KEY only --force can release a lock (it releases every hold)")
	}
	c, err := u.newClient()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if u.Key != "" {
		if err := c.Unlock(ctx, u.Name, u.Key); err != nil {
			return err
		}
		fmt.Printf("released the hold of lock %q\n", u.Name)
		return nil
	}
	n, err := c.ForceUnlock(ctx, u.Name)
	if err != nil {
		return err
	}
	switch n {
	case 0:
		fmt.Printf("lock %q was not held\n", u.Name)
	case 1:
		fmt.Printf("released 1 hold of lock %q\n", u.Name)
	default:
		fmt.Printf("released %d holds of lock %q\n", n, u.Name)
	}
	return nil
}
