package settle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/flashgrab/flashgrab"
)

// Partition epochs: what keeps a settler batch read before Redis lost a
// partition's state from being counted twice after the partition's rebuild.
//
// A rebuild restores a partition from MySQL: a sale's stock as its initial
// stock less what MySQL's orders hold, a packet's remainder as its total less
// MySQL's shares. A settler batch read from the stream before the loss and
// committed after the rebuild read MySQL is not in that state: the units it
// sold would be sold again, and the shares it paid refunded to the sender on
// top. So MySQL keeps an epoch per partition (partition_epochs); every
// rebuild raises it before it reads (bumpEpoch) and writes the new number
// into the partition's Redis marker; the scripts copy the marker into every
// stream entry; and each settler transaction reads the row in share mode and
// refuses events of an older epoch (checkEpochs). The raise waits for every
// transaction already past the check, so a batch either commits before the
// rebuild reads or is refused: its wins were lost with the rest of the
// partition's Redis state (mode none; the durable modes keep the marker).

// StaleEpochError is the error of a settler transaction holding events of a
// partition epoch a rebuild has since left: settling them would count them a
// second time. The settler drops such entries (logged, counted in
// Metrics.Stale): their wins were lost with the partition's Redis state.
type StaleEpochError struct {
	Partition int
	Epoch     int64 // the oldest epoch among the transaction's events
	Current   int64 // the partition's epoch in MySQL
}

func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("events of partition %d's epoch %d, rebuilt since (now epoch %d): settling them would count them twice",
		e.Partition, e.Epoch, e.Current)
}

// bumpEpoch raises partition p's epoch and returns the new number. Callers
// hold the partition's rebuild lock, and call it after settling what the
// partition's stream holds and before reading MySQL: the UPDATE waits for the
// settler transactions that checked the old epoch (they hold its row in share
// mode), and every later one finds the new epoch and refuses older events.
func (b *Books) bumpEpoch(ctx context.Context, p int) (int64, error) {
	var epoch int64
	err := runTx(ctx, b.DB, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO partition_epochs (part, epoch) VALUES (?, 1)
			ON DUPLICATE KEY UPDATE epoch = epoch + 1, bumped_at = CURRENT_TIMESTAMP(3)`, p); err != nil {
			return unavailable(err)
		}
		return unavailable(tx.QueryRowContext(ctx, `SELECT epoch FROM partition_epochs WHERE part = ?`, p).Scan(&epoch))
	})
	if err != nil {
		return 0, fmt.Errorf("raise partition %d's epoch: %w", p, err)
	}
	return epoch, nil
}

// checkEpochs reads, in tx and in share mode, the epoch of every partition
// whose events carry one, and fails with a *StaleEpochError when an event is
// older. Events of epoch 0 (unknown) are not checked. The share lock is held
// to the end of tx, so a rebuild's bumpEpoch waits for tx to end.
func checkEpochs(ctx context.Context, tx *sql.Tx, events []flashgrab.Event) error {
	oldest := map[int]int64{}
	for _, e := range events {
		if e.Epoch > 0 && (oldest[e.Partition] == 0 || e.Epoch < oldest[e.Partition]) {
			oldest[e.Partition] = e.Epoch
		}
	}
	parts := make([]int, 0, len(oldest))
	for p := range oldest {
		parts = append(parts, p)
	}
	slices.Sort(parts) // one order of locks for every transaction
	for _, p := range parts {
		var current int64
		err := tx.QueryRowContext(ctx, `SELECT epoch FROM partition_epochs WHERE part = ? LOCK IN SHARE MODE`, p).Scan(&current)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read partition %d's epoch: %w", p, unavailable(err))
		}
		if oldest[p] < current {
			return &StaleEpochError{Partition: p, Epoch: oldest[p], Current: current}
		}
	}
	if testHookEpochsChecked != nil {
		testHookEpochsChecked(events)
	}
	return nil
}

// testHookEpochsChecked, when set (by a test), runs in a settler transaction
// that passed its epoch check, with the transaction's events.
var testHookEpochsChecked func(events []flashgrab.Event)
