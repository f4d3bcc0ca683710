package integration

import (
	"strings"
	"testing"
	"time"
)

// --max-multi (flag, environment) bounds the names of one MLOCK.
func TestServer_MaxMultiBoundsTheNamesOfAnMLOCK(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		max  int
	}{
		{"default", nil, nil, 64},
		{"flag", nil, []string{"--max-multi", "2"}, 2},
		{"environment", []string{"RELOCK_MAX_MULTI=3"}, nil, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServerEnv(t, tc.env, tc.args...)
			c := srv.client(t)
			ctx := ctxFor(t, 10*time.Second)
			mlock := func(n int) error {
				args := []any{"MTRYLOCK", n}
				for i := 0; i < n; i++ {
					args = append(args, "mm:"+strings.Repeat("x", i+1))
				}
				return c.Do(ctx, args...).Err()
			}
			if err := mlock(tc.max); err != nil {
				t.Fatalf("MTRYLOCK of %d names: %v", tc.max, err)
			}
			err := mlock(tc.max + 1)
			if err == nil || !strings.HasPrefix(err.Error(), "LIMIT more than max-multi") {
				t.Fatalf("MTRYLOCK of %d names = %v, want LIMIT", tc.max+1, err)
			}
		})
	}
}
