package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/relock/relock/clientlib"
)

// unlockCmd is `relock unlock`.
type unlockCmd struct {
	clientFlags `embed:""`

	Force bool   `env:"-" help:"Release every hold of the lock, whoever holds it (FORCEUNLOCK). Asks for confirmation unless --yes."`
	Yes   bool   `short:"y" env:"-" help:"Do not ask for confirmation."`
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
	if !u.Yes {
		ok, err := confirm(ctx, c, u.Name)
		if err != nil {
			return err
		}
		if !ok {
			return &exitError{code: 1, err: errors.New("not confirmed; nothing released (use --yes to skip the question)")}
		}
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

// confirm shows who holds the lock and asks on the terminal whether to
// release it. Without a terminal on stdin it refuses: a script must say
// --yes.
func confirm(ctx context.Context, c *clientlib.Client, name string) (bool, error) {
	if !isTerminal(os.Stdin) {
		return false, errors.New("unlock --force asks for confirmation on a terminal; pass --yes to run it without one")
	}
	if li, err := c.Inspect(ctx, name); err == nil && li != nil {
		printLocks(os.Stderr, []clientlib.LockInfo{*li}, true)
	}
	fmt.Fprintf(os.Stderr, "Release every hold of lock %q? Its holders are not told until they next RENEW or UNLOCK. [y/N] ", name)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes", nil
}
