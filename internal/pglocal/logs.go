package pglocal

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// The server log: every initdb and postgres run appends to it, and start
// errors quote it.

func (s *Server) openLog() (*os.File, error) {
	f, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pglocal: open server log: %w", err)
	}
	return f, nil
}

func logSize(f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns what the server logged after offset.
func (s *Server) logSince(offset int64) []byte {
	f, err := os.Open(s.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<30))
	return b
}

// logTail formats the end of the server log for an error message.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return "\nserver log " + s.logPath + " (tail):\n" + string(bytes.TrimRight(b, "\n"))
}

// portInUse reports whether postgres logged a failed TCP bind. The log is
// the only channel a child process has to say why it exited; lc_messages=C
// keeps the wording stable.
func portInUse(log []byte) bool {
	return bytes.Contains(log, []byte("Address already in use")) ||
		bytes.Contains(log, []byte("could not create any TCP/IP sockets"))
}
