package engine

import (
	"fmt"
	"io"
	"os"

	"github.com/coreos/go-systemd/v22/journal"
)

// Logger writes to journald when it runs (boot-time hooks have no terminal) and to stderr otherwise.
// Errors always reach stderr too, so `ifup` shows why it failed.
type Logger struct {
	Tag     string
	Verbose bool      // info lines on stderr as well
	Stderr  io.Writer // nil = os.Stderr
	journal bool
}

func NewLogger(tag string, verbose bool) *Logger {
	return &Logger{Tag: tag, Verbose: verbose, journal: journal.Enabled()}
}

func (l *Logger) out() io.Writer {
	if l.Stderr != nil {
		return l.Stderr
	}
	return os.Stderr
}

func (l *Logger) Infof(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if l.journal {
		_ = journal.Send(msg, journal.PriInfo, map[string]string{"SYSLOG_IDENTIFIER": l.Tag})
	}
	if l.Verbose || !l.journal {
		if l.Verbose {
			fmt.Fprintf(l.out(), "%s: %s\n", l.Tag, msg)
		}
	}
}

func (l *Logger) Errorf(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if l.journal {
		_ = journal.Send(msg, journal.PriErr, map[string]string{"SYSLOG_IDENTIFIER": l.Tag})
	}
	fmt.Fprintf(l.out(), "%s: %s\n", l.Tag, msg)
}
