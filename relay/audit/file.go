package audit

import (
	"fmt"
	"os"
	"sync"
)

// File is an audit log file opened for appending, for --audit-log.
//
// Rotation is the operator's tooling. With logrotate's copytruncate nothing
// else is needed (the file is opened with O_APPEND, so writes continue at
// the new end). Tools that move the file away instead (create, the default)
// need the relay to open the path again: call Reopen, e.g. on SIGHUP.
type File struct {
	path string

	mu sync.Mutex
	f  *os.File
}

// OpenFile opens path for appending, creating it with mode 0600 (an
// existing file keeps its mode). "-" is standard output, which Close and
// Reopen leave alone.
func OpenFile(path string) (*File, error) {
	if path == "-" {
		return &File{path: path, f: os.Stdout}, nil
	}
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

func open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return f, nil
}

// Write appends p.
func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return 0, os.ErrClosed
	}
	return f.f.Write(p)
}

// Reopen opens the path again, for writes after the file was moved away by
// log rotation. On failure the old file stays in use.
func (f *File) Reopen() error {
	if f.path == "-" {
		return nil
	}
	nf, err := open(f.path)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.f
	if old != nil {
		f.f = nf
	}
	f.mu.Unlock()
	if old == nil {
		nf.Close()
		return os.ErrClosed
	}
	return old.Close()
}

// Close closes the file; writes after it fail with os.ErrClosed.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return os.ErrClosed
	}
	var err error
	if f.path != "-" {
		err = f.f.Close()
	}
	f.f = nil
	if err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}
