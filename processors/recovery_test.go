package processors

import (
	"testing"
	"time"

	"github.com/lovoo/goka"
)

func TestRecoveryProgress(t *testing.T) {
	table := func(status goka.PartitionStatus, offset, hwm int64, recovered bool) *goka.PartitionProcStats {
		rs := &goka.RecoveryStats{Offset: offset, Hwm: hwm}
		if recovered {
			rs.RecoveryTime = time.Now()
		}
		return &goka.PartitionProcStats{TableStats: &goka.TableStats{Status: status, Recovery: rs}}
	}
	for _, tc := range []struct {
		name              string
		parts             map[int32]*goka.PartitionProcStats
		done, total, left int64
	}{
		{"none assigned", nil, 0, 0, 0},
		{"all running", map[int32]*goka.PartitionProcStats{0: table(goka.PartitionRunning, 10, 10, true), 1: table(goka.PartitionRunning, 5, 5, true)}, 2, 2, 0},
		{"one recovering", map[int32]*goka.PartitionProcStats{
			0: table(goka.PartitionRunning, 10, 10, true),
			1: table(goka.PartitionRecovering, 40, 100, false),
			2: table(goka.PartitionConnecting, 0, 7, false),
		}, 1, 3, 67},
		{"recovered, catching up", map[int32]*goka.PartitionProcStats{0: table(goka.PartitionConnecting, 9, 9, true)}, 1, 1, 0},
	} {
		var tables []*goka.TableStats
		for _, pp := range tc.parts {
			tables = append(tables, pp.TableStats)
		}
		done, total, left := recoveryProgress(tables)
		if int64(done) != tc.done || int64(total) != tc.total || left != tc.left {
			t.Errorf("%s: got %d/%d partitions, %d left; want %d/%d, %d left", tc.name, done, total, left, tc.done, tc.total, tc.left)
		}
	}
}
