package persist

import (
	"time"

	"github.com/relock/relock/locktable"
)

// RestoreInto loads the stored holds into an empty table (see
// locktable.Table.Restore for what comes back and how), moves the table's
// fence above the stored high-water mark, and attaches the store to the
// table. now is the table's clock; grace is --restore-grace.
func (s *Store) RestoreInto(t *locktable.Table, now int64, grace time.Duration) (restored, dropped int, err error) {
	recs, hw, err := s.Load()
	if err != nil {
		return 0, 0, err
	}
	t.AdvanceFence(hw)
	restored, dropped = t.Restore(recs, now, int64(grace))
	if err := s.Attach(t); err != nil {
		return 0, 0, err
	}
	return restored, dropped, nil
}
