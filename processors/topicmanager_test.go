package processors

import (
	"errors"
	"testing"
	"time"

	"github.com/lovoo/goka"
)

// flakyOffsets fails GetOffset fails times, then answers 42.
type flakyOffsets struct {
	goka.TopicManager
	fails, calls int
}

func (f *flakyOffsets) GetOffset(string, int32, int64) (int64, error) {
	f.calls++
	if f.calls <= f.fails {
		return -1, errors.New("kafka server: not leader for partition")
	}
	return 42, nil
}

func (f *flakyOffsets) Close() error { return nil }

func TestOffsetsRetriedThroughABrokerComingBack(t *testing.T) {
	for _, tc := range []struct {
		fails   int
		window  time.Duration
		wantErr bool
	}{
		{fails: 0, window: time.Second},
		{fails: 3, window: 5 * time.Second},
		{fails: 1000, window: 300 * time.Millisecond, wantErr: true},
	} {
		f := &flakyOffsets{fails: tc.fails}
		tm, err := withOffsetRetries(func([]string) (goka.TopicManager, error) { return f, nil }, tc.window)(nil)
		if err != nil {
			t.Fatal(err)
		}
		off, err := tm.GetOffset("inventory-table", 5, -2)
		switch {
		case tc.wantErr && err == nil:
			t.Errorf("%d failures in %s: got offset %d, want an error", tc.fails, tc.window, off)
		case !tc.wantErr && (err != nil || off != 42):
			t.Errorf("%d failures in %s: got %d, %v; want 42 after %d calls", tc.fails, tc.window, off, err, tc.fails+1)
		}
	}
}

func TestOffsetRetriesStopAtClose(t *testing.T) {
	f := &flakyOffsets{fails: 1 << 30}
	tm, _ := withOffsetRetries(func([]string) (goka.TopicManager, error) { return f, nil }, time.Hour)(nil)
	done := make(chan error, 1)
	go func() { _, err := tm.GetOffset("t", 0, -2); done <- err }()
	if err := tm.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("GetOffset succeeded, want the last error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("GetOffset still retrying 10s after Close")
	}
}
