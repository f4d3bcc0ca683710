package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterCmd is `relock cluster`: membership of a Raft cluster.
type clusterCmd struct {
	Status clusterStatusCmd `cmd:"" help:"List the members, their Raft addresses and the leader."`
	Add    clusterAddCmd    `cmd:"" help:"Add a member (CLUSTER ADDNODE on the leader)."`
	Remove clusterRemoveCmd `cmd:"" help:"Remove a member (CLUSTER REMOVENODE on the leader)."`
}

type clusterStatusCmd struct {
	clientFlags `embed:""`
}

type clusterAddCmd struct {
	clientFlags `embed:""`
	ID          string `arg:"" help:"The new member's --node-id."`
	RaftAddr    string `arg:"" help:"The new member's --raft-listen address."`
}

type clusterRemoveCmd struct {
	clientFlags `embed:""`
	ID          string `arg:"" help:"The member's --node-id."`
}

// clusterDo sends one command to the members named by f.Addr (comma-
// separated), following -MOVED to the leader, for at most 20 s of ctx.
func (f *clientFlags) clusterDo(ctx context.Context, args ...any) (any, error) {
	tlsCfg, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return clusterDo(ctx, strings.Split(f.Addr, ","), func(addr string) *redis.Client {
		return redis.NewClient(&redis.Options{Addr: addr, Username: f.User, Password: f.Password, TLSConfig: tlsCfg,
			MaxRetries: -1, PoolSize: 1, DisableIdentity: true})
	}, args...)
}

// clusterDo tries addrs in turn, follows -MOVED, and retries -CLUSTERDOWN
// with a short pause until ctx ends.
func clusterDo(ctx context.Context, addrs []string, dial func(string) *redis.Client, args ...any) (any, error) {
	var last error
	for round := 0; round < 100 && ctx.Err() == nil; round++ {
		for i := 0; i < len(addrs); i++ {
			c := dial(addrs[i])
			v, err := c.Do(ctx, args...).Result()
			c.Close()
			if err == nil {
				return v, nil
			}
			last = err
			msg := err.Error()
			if moved, ok := strings.CutPrefix(msg, "MOVED 0 "); ok {
				addrs = append([]string{moved}, addrs...)
				i = -1
				continue
			}
			var rerr redis.Error
			if errors.As(err, &rerr) && !strings.HasPrefix(msg, "CLUSTERDOWN") {
				return nil, err // a real answer
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("no leader answered: %w", last)
}

func (c *clusterStatusCmd) Run() error {
	v, err := c.clusterDo(context.Background(), "CLUSTER", "MEMBERS")
	if err != nil {
		return err
	}
	members, _ := v.([]any)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT ADDRESS\tSUFFRAGE\tLEADER")
	for _, m := range members {
		f := map[string]any{}
		switch t := m.(type) {
		case map[any]any:
			for k, v := range t {
				f[fmt.Sprint(k)] = v
			}
		case []any:
			for i := 0; i+1 < len(t); i += 2 {
				f[fmt.Sprint(t[i])] = t[i+1]
			}
		}
		leader := ""
		if fmt.Sprint(f["leader"]) == "1" {
			leader = "*"
		}
		fmt.Fprintf(tw, "%v\t%v\t%v\t%s\n", f["id"], f["raft-addr"], f["suffrage"], leader)
	}
	return tw.Flush()
}

func (c *clusterAddCmd) Run() error {
	if _, err := c.clusterDo(context.Background(), "CLUSTER", "ADDNODE", c.ID, c.RaftAddr); err != nil {
		return err
	}
	fmt.Printf("added %s (%s)\n", c.ID, c.RaftAddr)
	return nil
}

func (c *clusterRemoveCmd) Run() error {
	if _, err := c.clusterDo(context.Background(), "CLUSTER", "REMOVENODE", c.ID); err != nil {
		return err
	}
	fmt.Printf("removed %s\n", c.ID)
	return nil
}
