package kafkaobs

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// TestChatterAtDebug: franz-go's info lines reach slog at debug level,
// warnings and errors at theirs, and kslog asks franz-go for no info
// chatter while debug is off.
func TestChatterAtDebug(t *testing.T) {
	for _, tc := range []struct {
		level     slog.Level
		wantLevel kgo.LogLevel
		want      []string
		dropped   []string
	}{
		{slog.LevelInfo, kgo.LogLevelWarn, []string{"level=WARN msg=warned", "level=ERROR msg=failed"}, []string{"joined"}},
		{slog.LevelDebug, kgo.LogLevelDebug, []string{"level=DEBUG msg=joined", "level=WARN msg=warned"}, nil},
	} {
		var buf bytes.Buffer
		l := kslog.New(slog.New(quiet{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})}))
		if got := l.Level(); got != tc.wantLevel {
			t.Errorf("slog at %s: kslog asks franz-go for %s, want %s", tc.level, got, tc.wantLevel)
		}
		l.Log(kgo.LogLevelInfo, "joined", "group", "g")
		l.Log(kgo.LogLevelWarn, "warned")
		l.Log(kgo.LogLevelError, "failed")
		out := buf.String()
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("slog at %s: no %q in %q", tc.level, w, out)
			}
		}
		for _, d := range tc.dropped {
			if strings.Contains(out, d) {
				t.Errorf("slog at %s: %q logged, want it dropped: %q", tc.level, d, out)
			}
		}
	}
}
