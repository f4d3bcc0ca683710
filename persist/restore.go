package persist

import (
	"time"

	"github.com/relock/relock/locktable"
)

// RestoreInto loads the stored holds into an empty table (Restore) and
// attaches the store to the table (Attach). now is the table's clock;
// grace is --restore-grace.
func (s *Store) RestoreInto(t *locktable.Table, now int64, grace time.Duration) (restored, dropped int, err error) {
	if restored, dropped, err = s.Restore(t, now, grace); err != nil {
		return 0, 0, err
	}
	if err := s.Attach(t); err != nil {
		return 0, 0, err
	}
	return restored, dropped, nil
}

// Restore loads the stored holds into an empty table (see
// locktable.Table.Restore for what comes back and how) and moves the
// table's fence above the stored high-water mark, writing nothing: until
// Attach, the store still holds what the last run left, so a start that
// fails before it serves (a listen error) leaves the next start the same
// holds with a whole --restore-grace.
func (s *Store) Restore(t *locktable.Table, now int64, grace time.Duration) (restored, dropped int, err error) {
	recs, hw, err := s.Load()
	if err != nil {
		return 0, 0, err
	}
	t.AdvanceFence(hw)
	restored, dropped = t.Restore(recs, now, int64(grace))
	return restored, dropped, nil
}
